// Package sdbool parses booleans the way systemd does (parse_boolean), so
// that berth's flags and the .nspawn files it reads take the same words as
// systemd's tools: yes/no, true/false, 1/0, on/off, y/n, t/f.
package sdbool

import (
	"fmt"
	"strings"
)

// Parse parses a systemd boolean, ignoring case.
func Parse(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (want yes or no)", s)
}
