package sdbool

import "testing"

func TestParse(t *testing.T) {
	for in, want := range map[string]bool{"yes": true, "NO": false, "1": true, "0": false, "On": true, "off": false, "t": true, "f": false} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "2", "yess", "nein"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
