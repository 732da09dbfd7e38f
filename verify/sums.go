package verify

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// MaxSumsSize bounds a checksum file (as systemd bounds auxiliary files):
// a larger one is refused rather than read into memory.
const MaxSumsSize = 1 << 20

// Sums is a parsed checksum file: file names and their SHA-256 digests.
type Sums struct {
	digests map[string]string // name -> lowercase hex
}

// ParseSums reads a SHA256SUMS-style file. It accepts every form
// systemd-pull accepts — "<hex> *name" (binary), "<hex>  name" (text),
// "<hex> name" (one space, systemd ≥ 258) — and also the BSD form
// "SHA256 (name) = <hex>" (and openssl's "SHA256(name)= <hex>"), uppercase
// hex, "./name", GNU-escaped lines ("\" prefix), CRLF line ends, blank and
// "#" comment lines, and a last line without a newline. Any other line is an
// error naming its line number: a checksum file we cannot fully understand is
// not trusted. Input is limited to MaxSumsSize bytes.
func ParseSums(r io.Reader) (*Sums, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSumsSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading checksum file: %w", err)
	}
	if len(data) > MaxSumsSize {
		return nil, fmt.Errorf("checksum file is larger than %d bytes: refusing it", MaxSumsSize)
	}
	if _, ok := ClearsignedText(data); ok {
		return nil, errors.New("checksum file is clear-signed (inline OpenPGP): check it with VerifyClearsigned and parse the signed text")
	}
	s := &Sums{digests: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxSumsSize+1)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, digest, err := parseSumLine(line)
		if err != nil {
			return nil, fmt.Errorf("checksum file line %d: %w", n, err)
		}
		if old, ok := s.digests[name]; ok && old != digest {
			return nil, fmt.Errorf("checksum file line %d: %q is listed twice with different checksums", n, name)
		}
		s.digests[name] = digest
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading checksum file: %w", err)
	}
	if len(s.digests) == 0 {
		return nil, errors.New("checksum file is empty")
	}
	return s, nil
}

// parseSumLine parses one non-blank line into a clean name and a lowercase
// hex digest.
func parseSumLine(line string) (name, digest string, err error) {
	if rest, ok := strings.CutPrefix(line, "SHA256"); ok {
		return parseBSDLine(rest)
	}
	escaped := false
	if rest, ok := strings.CutPrefix(line, `\`); ok {
		escaped, line = true, rest
	}
	if len(line) < 64 {
		return "", "", fmt.Errorf("want \"<64 hex digits> *NAME\" or \"SHA256 (NAME) = <64 hex digits>\", got %q", clip(line))
	}
	digest, err = parseHex(line[:64])
	if err != nil {
		return "", "", err
	}
	rest := line[64:]
	if rest == "" || rest[0] != ' ' {
		if rest != "" && isHex(rest[0]) {
			return "", "", fmt.Errorf("checksum is longer than 64 hex digits (not SHA-256?)")
		}
		return "", "", fmt.Errorf("no file name after the checksum")
	}
	rest = rest[1:]
	if rest != "" && (rest[0] == '*' || rest[0] == ' ') {
		rest = rest[1:] // GNU mode character: binary or text
	}
	if escaped {
		if rest, err = unescapeGNU(rest); err != nil {
			return "", "", err
		}
	}
	name, err = cleanSumName(rest)
	return name, digest, err
}

// parseBSDLine parses what follows "SHA256" in "SHA256 (name) = hex".
func parseBSDLine(rest string) (name, digest string, err error) {
	rest = strings.TrimPrefix(rest, " ")
	if !strings.HasPrefix(rest, "(") {
		return "", "", fmt.Errorf("want \"SHA256 (NAME) = <64 hex digits>\", got %q", clip("SHA256"+rest))
	}
	i := strings.LastIndex(rest, ")")
	if i < 0 {
		return "", "", fmt.Errorf("want \"SHA256 (NAME) = <64 hex digits>\", got %q", clip("SHA256"+rest))
	}
	tail := strings.TrimPrefix(rest[i+1:], " ")
	tail, ok := strings.CutPrefix(tail, "=")
	if !ok {
		return "", "", fmt.Errorf("want \"SHA256 (NAME) = <64 hex digits>\", got %q", clip("SHA256"+rest))
	}
	tail = strings.TrimPrefix(tail, " ")
	if len(tail) != 64 {
		return "", "", fmt.Errorf("checksum has %d characters, want 64 hex digits", len(tail))
	}
	if digest, err = parseHex(tail); err != nil {
		return "", "", err
	}
	name, err = cleanSumName(rest[1:i])
	return name, digest, err
}

func parseHex(s string) (string, error) {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return "", fmt.Errorf("checksum %q is not 64 hex digits", clip(s))
		}
	}
	return strings.ToLower(s), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// unescapeGNU undoes coreutils' escaping of names with "\" or a newline.
func unescapeGNU(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) {
			return "", errors.New("file name ends in a lone backslash")
		}
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		default:
			return "", fmt.Errorf("unknown escape \\%c in file name", s[i])
		}
	}
	return b.String(), nil
}

// cleanSumName drops leading "./" and refuses names that cannot be files.
func cleanSumName(name string) (string, error) {
	for strings.HasPrefix(name, "./") {
		name = strings.TrimLeft(name[2:], "/")
	}
	if name == "" || name == "." {
		return "", errors.New("no file name after the checksum")
	}
	if strings.ContainsRune(name, 0) {
		return "", errors.New("file name contains a NUL byte")
	}
	return name, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// Lookup returns the digest (lowercase hex) listed for name; a leading
// "./" in name is ignored.
func (s *Sums) Lookup(name string) (digest string, ok bool) {
	for strings.HasPrefix(name, "./") {
		name = strings.TrimLeft(name[2:], "/")
	}
	digest, ok = s.digests[name]
	return digest, ok
}

// Names lists the files in the checksum file, sorted.
func (s *Sums) Names() []string {
	names := make([]string, 0, len(s.digests))
	for n := range s.digests {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Check compares the digest of the file called name with the listed one.
// It fails with ErrNotListed or ErrMismatch.
func (s *Sums) Check(name, digest string) error {
	want, ok := s.Lookup(name)
	if !ok {
		return fmt.Errorf("%s: %w", name, ErrNotListed)
	}
	if !strings.EqualFold(want, digest) {
		return fmt.Errorf("%s: %w: sha256 is %s, the checksum file says %s (file damaged or tampered with)", name, ErrMismatch, strings.ToLower(digest), want)
	}
	return nil
}

// WriteSums writes files (base name -> SHA-256 hex) as "<hex> *<name>\n"
// lines sorted by name: the binary-mode GNU form that every systemd version
// reads. Names must be plain base names without line breaks or backslashes
// (which old systemd versions could not match).
func WriteSums(w io.Writer, files map[string]string) error {
	if len(files) == 0 {
		return errors.New("writing checksum file: no files")
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\\\n\r\x00") {
			return fmt.Errorf("writing checksum file: %q is not a plain file name", n)
		}
		d := files[n]
		if len(d) != 64 {
			return fmt.Errorf("writing checksum file: checksum of %s is not 64 hex digits", n)
		}
		d, err := parseHex(d)
		if err != nil {
			return fmt.Errorf("writing checksum file: %s: %w", n, err)
		}
		fmt.Fprintf(&b, "%s *%s\n", d, n)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// HashFile returns the SHA-256 of a file's content as lowercase hex.
func HashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, err := HashReader(f)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return d, nil
}

// HashReader returns the SHA-256 of everything r yields, as lowercase hex.
func HashReader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
