// Package imageroot manages the image root (/var/lib/machines): image names,
// hidden work directories, per-name locks, and the atomic install step.
//
// Everything a job writes lives under a hidden ".#" name inside the image
// root until it is complete and verified; only then is it renamed into place
// with renameat2(RENAME_NOREPLACE). A rename within one file system is atomic,
// so another reader sees either no image or the whole image, and a failed or
// interrupted job leaves nothing under the final name.
package imageroot

import (
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ValidName checks an image name with systemd 262's rules
// (image_name_is_valid): a valid file name, valid UTF-8, no control
// characters, not starting with ".#" (those are work files). Unlike systemd
// 252 it accepts "_" and names longer than a host name.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("image name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("image name %q is not a valid file name", name)
	case len(name) > 255:
		return fmt.Errorf("image name %.20q... is longer than 255 bytes", name)
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("image name %q contains \"/\"", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("image name %q is not valid UTF-8", name)
	case strings.HasPrefix(name, ".#"):
		return fmt.Errorf("image name %q starts with \".#\", which is reserved for work files", name)
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
