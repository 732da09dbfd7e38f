// Package imageroot manages the image root (/var/lib/machines): image names,
// hidden work directories, per-name locks, and the atomic install step.
//
// Everything a job writes lives under a hidden scratch name (package
// scratch) inside the image root until it is complete and verified; only
// then is it synced and renamed into place with renameat2(RENAME_NOREPLACE).
// A rename within one file system is atomic, so another reader sees either
// no image or the whole image, and a failed or interrupted job leaves
// nothing under the final name; what a killed job leaves under its scratch
// name is reaped by the next job (Reap).
//
// The image root is a trust boundary: image names come from URLs and users,
// and nothing berth keeps for itself may be reachable through one
// (ValidName).
package imageroot

import (
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen is the longest image name: NAME.nspawn, the longest name
// derived from it in the image root, must still be a valid file name.
const MaxNameLen = 255 - len(".nspawn")

// ValidName checks an image name with systemd 262's rules
// (image_name_is_valid: a valid file name, valid UTF-8, no control
// characters) and berth's own, which keep images and berth's files apart:
//
//   - no leading "." : hidden names are where berth and systemd keep their
//     own files (work trees, the download cache, nspawn's ".#NAME.lck"), so
//     no image, whatever its URL says, can take or reach one of them;
//   - no ".raw" or ".nspawn" suffix: NAME.raw is the raw image NAME and
//     NAME.nspawn its settings, so such a name would collide with another
//     image's files;
//   - at most MaxNameLen bytes, so that every name derived from it fits.
//
// Unlike systemd 252 it accepts "_" and names longer than a host name.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("image name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("image name %q is not a valid file name", name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("image name %.20q... is longer than %d bytes", name, MaxNameLen)
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("image name %q contains \"/\"", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("image name %q is not valid UTF-8", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("image name %q starts with \".\": hidden names are reserved for berth's and systemd's own files", name)
	case strings.HasSuffix(name, ".raw") || strings.HasSuffix(name, ".nspawn"):
		return fmt.Errorf("image name %q ends in %q, which is reserved for raw images and settings files", name, path.Ext(name))
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("image name %q contains a control character", name)
		}
	}
	return nil
}

var tarSuffixes = []string{".tar", ".tar.xz", ".tar.gz", ".tar.bz2", ".tgz", ".tar.zst", ".tar.zstd"}

var rawSuffixes = []string{".xz", ".gz", ".bz2", ".zst", ".raw", ".qcow2", ".img", ".bin"}

// TarName derives an image name from a tarball's file name or URL path, as
// systemd does: the last component with one tar suffix stripped.
func TarName(file string) string {
	base := path.Base(file)
	for _, s := range tarSuffixes {
		if n, ok := strings.CutSuffix(base, s); ok && n != "" {
			return n
		}
	}
	return base
}

// RawName derives an image name from a disk image's file name: compression
// and image suffixes are stripped repeatedly.
func RawName(file string) string {
	base := path.Base(file)
	for {
		stripped := false
		for _, s := range rawSuffixes {
			if n, ok := strings.CutSuffix(base, s); ok && n != "" {
				base, stripped = n, true
			}
		}
		if !stripped {
			return base
		}
	}
}
