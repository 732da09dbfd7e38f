package hostile

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestCorpusWellFormed checks that every case is a readable tar archive
// that holds the entry it expects to be refused.
func TestCorpusWellFormed(t *testing.T) {
	seen := make(map[string]bool)
	for _, c := range Cases("/victim") {
		if seen[c.Name] {
			t.Errorf("duplicate case %s", c.Name)
		}
		seen[c.Name] = true
		var buf bytes.Buffer
		if err := c.WriteTar(&buf); err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		tr := tar.NewReader(&buf)
		var names []string
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
				t.Fatalf("%s: %v", c.Name, err)
			}
			names = append(names, h.Name)
		}
		if len(names) != len(c.items) {
			t.Errorf("%s: %d entries in the tar, %d in the case", c.Name, len(names), len(c.items))
		}
		found := c.Bad == ""
		for _, n := range names {
			found = found || n == c.Bad
		}
		if !found {
			t.Errorf("%s: no entry named %q", c.Name, c.Bad)
		}
		n := 0
		for src := c.Source(); ; n++ {
			if _, err := src.Next(); err != nil {
				break
			}
		}
		if n != len(c.items) {
			t.Errorf("%s: source yields %d entries, want %d", c.Name, n, len(c.items))
		}
	}
}
