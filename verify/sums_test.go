package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	hexA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	hexB = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)

func TestParseSumsAcceptedForms(t *testing.T) {
	up := strings.ToUpper(hexA)
	cases := []struct {
		name, in, file, want string
	}{
		{"binary", hexA + " *image.tar.xz\n", "image.tar.xz", hexA},
		{"text two spaces", hexA + "  image.tar.xz\n", "image.tar.xz", hexA},
		{"one space (lxc)", hexA + " image.tar.xz\n", "image.tar.xz", hexA},
		{"uppercase hex", up + " *image.tar.xz\n", "image.tar.xz", hexA},
		{"dot slash", hexA + "  ./image.tar.xz\n", "image.tar.xz", hexA},
		{"CRLF", hexA + " *image.tar.xz\r\n" + hexB + " *other\r\n", "image.tar.xz", hexA},
		{"CRLF second", hexA + " *image.tar.xz\r\n" + hexB + " *other\r\n", "other", hexB},
		{"no final newline", hexB + " *x\n" + hexA + " *image.tar.xz", "image.tar.xz", hexA},
		{"BSD", "SHA256 (image.tar.xz) = " + hexA + "\n", "image.tar.xz", hexA},
		{"BSD uppercase", "SHA256 (image.tar.xz) = " + up, "image.tar.xz", hexA},
		{"BSD dot slash", "SHA256 (./image.tar.xz) = " + hexA + "\n", "image.tar.xz", hexA},
		{"openssl dgst", "SHA256(image.tar.xz)= " + hexA + "\n", "image.tar.xz", hexA},
		{"BSD name with parens", "SHA256 (a (1).raw) = " + hexA + "\n", "a (1).raw", hexA},
		{"blank and comment lines", "# release 1\n\n" + hexA + " *image.tar.xz\n\n", "image.tar.xz", hexA},
		{"name with spaces", hexA + " *my image.raw\n", "my image.raw", hexA},
		{"GNU escaped", `\` + hexA + ` *back\\slash` + "\n", `back\slash`, hexA},
		{"mixed forms", hexB + "  a\nSHA256 (image.tar.xz) = " + hexA + "\n", "image.tar.xz", hexA},
		{"lookup with ./", hexA + " *image.tar.xz\n", "./image.tar.xz", hexA},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := ParseSums(strings.NewReader(c.in))
			if err != nil {
				t.Fatalf("ParseSums(%q): %v", c.in, err)
			}
			got, ok := s.Lookup(c.file)
			if !ok || got != c.want {
				t.Fatalf("Lookup(%q) = %q, %v; want %q (names %q)", c.file, got, ok, c.want, s.Names())
			}
		})
	}
}

func TestParseSumsRejects(t *testing.T) {
	cases := []struct{ name, in, msg string }{
		{"empty", "", "checksum file is empty"},
		{"only blank lines", "\n\r\n\n", "checksum file is empty"},
		{"short hex", hexA[:63] + " *f\n", "line 1"},
		{"long hex", hexA + "0 *f\n", "longer than 64"},
		{"non hex", "g" + hexA[1:] + " *f\n", "not 64 hex"},
		{"missing name", hexA + "\n", "no file name"},
		{"missing name after star", hexA + " *\n", "no file name"},
		{"only ./", hexA + " ./\n", "no file name"},
		{"tab separator", hexA + "\tf\n", "no file name"},
		{"garbage second line", hexA + " *f\nhello world\n", "line 2"},
		{"BSD short", "SHA256 (f) = " + hexA[:40] + "\n", "64 hex"},
		{"BSD no paren", "SHA256 f = " + hexA + "\n", "SHA256 (NAME)"},
		{"BSD no equals", "SHA256 (f) " + hexA + "\n", "SHA256 (NAME)"},
		{"MD5 line", "MD5 (f) = d41d8cd98f00b204e9800998ecf8427e\n", "line 1"},
		{"conflicting duplicate", hexA + " *f\n" + hexB + " *f\n", "listed twice"},
		{"bad escape", `\` + hexA + ` *a\x` + "\n", "escape"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSums(strings.NewReader(c.in))
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("ParseSums(%q) = %v, want error containing %q", c.in, err, c.msg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestParseSumsSizeLimit(t *testing.T) {
	line := hexA + " *f\n"
	big := strings.Repeat("# padding\n", MaxSumsSize/10+1) + line
	if _, err := ParseSums(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized checksum file: err = %v", err)
	}
	// Exactly at the limit is fine.
	ok := strings.Repeat("#", MaxSumsSize-len(line)-1) + "\n" + line
	if _, err := ParseSums(strings.NewReader(ok)); err != nil {
		t.Fatalf("checksum file of exactly %d bytes: %v", len(ok), err)
	}
}

func TestDuplicateSameDigestIsFine(t *testing.T) {
	s, err := ParseSums(strings.NewReader(hexA + " *f\nSHA256 (./f) = " + strings.ToUpper(hexA) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Names(); len(n) != 1 || n[0] != "f" {
		t.Fatalf("Names = %q", n)
	}
}

func TestCheck(t *testing.T) {
	s, err := ParseSums(strings.NewReader(hexA + " *a\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check("a", strings.ToUpper(hexA)); err != nil {
		t.Errorf("Check(matching) = %v", err)
	}
	if err := s.Check("a", hexB); !errors.Is(err, ErrMismatch) {
		t.Errorf("Check(wrong digest) = %v, want ErrMismatch", err)
	}
	if err := s.Check("b", hexA); !errors.Is(err, ErrNotListed) {
		t.Errorf("Check(unlisted) = %v, want ErrNotListed", err)
	}
}

// TestWriteSumsReadByCoreutils writes a checksum file and has the real
// sha256sum --check (and our parser) read it back.
func TestWriteSumsReadByCoreutils(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for _, n := range []string{"b.tar.xz", "a.raw", "with space.nspawn"} {
		data := []byte("content of " + n)
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := HashFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if d != hex.EncodeToString(sum[:]) {
			t.Fatalf("HashFile(%s) = %s, want %x", n, d, sum)
		}
		files[n] = d
	}
	var b bytes.Buffer
	if err := WriteSums(&b, files); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], " *a.raw") || !strings.HasSuffix(lines[2], " *with space.nspawn") {
		t.Fatalf("WriteSums output not sorted GNU binary lines:\n%s", b.String())
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command(p, "--check", "--strict", "SHA256SUMS")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sha256sum --check rejects our checksum file: %v\n%s", err, out)
		}
	}
	s, err := ParseSums(&b)
	if err != nil {
		t.Fatal(err)
	}
	for n, d := range files {
		if got, _ := s.Lookup(n); got != d {
			t.Errorf("round trip %s: %s != %s", n, got, d)
		}
	}
}

func TestWriteSumsRejects(t *testing.T) {
	for _, files := range []map[string]string{
		{},
		{"a/b": hexA},
		{"": hexA},
		{"new\nline": hexA},
		{"back\\slash": hexA},
		{"f": hexA[:10]},
		{"f": "z" + hexA[1:]},
	} {
		var b bytes.Buffer
		if err := WriteSums(&b, files); err == nil {
			t.Errorf("WriteSums(%q) succeeded: %q", files, b.String())
		} else if b.Len() != 0 {
			t.Errorf("WriteSums(%q) failed but wrote %q", files, b.String())
		}
	}
}

func FuzzParseSums(f *testing.F) {
	for _, s := range []string{
		hexA + " *image.tar.xz\n",
		hexA + "  ./image.tar.xz\r\n" + hexB + " other",
		"SHA256 (a (1).raw) = " + hexA,
		"SHA256(x)= " + strings.ToUpper(hexB) + "\n# c\n",
		`\` + hexA + ` *a\\b\nc`,
		hexA + " * lead",
		"",
		"\n\n",
		hexA,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSums(bytes.NewReader(data))
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		files := map[string]string{}
		for _, n := range s.Names() {
			d, ok := s.Lookup(n)
			if !ok || len(d) != 64 || strings.ToLower(d) != d {
				t.Fatalf("Lookup(%q) = %q, %v", n, d, ok)
			}
			if strings.ContainsAny(n, "/\\\n\r") || n == ".." {
				continue // WriteSums writes plain base names only
			}
			files[n] = d
		}
		if len(files) == 0 {
			return
		}
		var b bytes.Buffer
		if err := WriteSums(&b, files); err != nil {
			t.Fatalf("WriteSums(%q): %v", files, err)
		}
		s2, err := ParseSums(&b)
		if err != nil {
			t.Fatalf("ParseSums(WriteSums(%q)) = %v\n%q", files, err, b.String())
		}
		if len(s2.Names()) != len(files) {
			t.Fatalf("round trip: %q became %q", files, s2.Names())
		}
		for n, d := range files {
			if got, ok := s2.Lookup(n); !ok || got != d {
				t.Fatalf("round trip %q: got %q, %v want %q", n, got, ok, d)
			}
		}
	})
}
