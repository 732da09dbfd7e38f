package export

import (
	"archive/tar"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/internal/testenv"
)

const base = 0x10180000

func acl(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

func capV3(rootid uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, capRev3|1)
	b = binary.LittleEndian.AppendUint32(b, 1<<13) // cap_net_raw permitted
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return binary.LittleEndian.AppendUint32(b, rootid)
}

func entry(uid, gid int, xattrs map[string][]byte) *formats.Entry {
	h := &tar.Header{Name: "f", Typeflag: tar.TypeReg, Uid: uid, Gid: gid}
	for k, v := range xattrs {
		formats.SetXattr(h, k, string(v))
	}
	return &formats.Entry{Header: h}
}

func TestUnshift(t *testing.T) {
	const undef = 0xffffffff
	e := entry(base+1000, base+100, map[string][]byte{
		"system.posix_acl_access":  acl([3]uint32{0x01, 6, undef}, [3]uint32{aclUser, 6, base + 1000}, [3]uint32{0x04, 4, undef}, [3]uint32{aclGroup, 4, base + 1001}, [3]uint32{0x10, 6, undef}, [3]uint32{0x20, 4, undef}),
		"system.posix_acl_default": acl([3]uint32{aclUser, 7, base}),
		"security.capability":      capV3(base),
		"user.note":                []byte("untouched"),
	})
	got, err := Unshift(base)(e)
	if err != nil {
		t.Fatal(err)
	}
	h := got.Header
	if h.Uid != 1000 || h.Gid != 100 {
		t.Errorf("owner %d:%d, want 1000:100", h.Uid, h.Gid)
	}
	x := formats.Xattrs(h)
	wantACL := string(acl([3]uint32{0x01, 6, undef}, [3]uint32{aclUser, 6, 1000}, [3]uint32{0x04, 4, undef}, [3]uint32{aclGroup, 4, 1001}, [3]uint32{0x10, 6, undef}, [3]uint32{0x20, 4, undef}))
	if x["system.posix_acl_access"] != wantACL {
		t.Errorf("access ACL % x", x["system.posix_acl_access"])
	}
	if x["system.posix_acl_default"] != string(acl([3]uint32{aclUser, 7, 0})) {
		t.Errorf("default ACL % x", x["system.posix_acl_default"])
	}
	c := []byte(x["security.capability"])
	if len(c) != capV2Size || binary.LittleEndian.Uint32(c) != capRev2|1 || binary.LittleEndian.Uint32(c[4:]) != 1<<13 {
		t.Errorf("capability not turned into v2 with root id 0: % x", c)
	}
	if x["user.note"] != "untouched" {
		t.Error("user xattr changed")
	}

	// A v3 capability for a non-root id keeps v3, shifted.
	e = entry(base, base, map[string][]byte{"security.capability": capV3(base + 5)})
	got, err = Unshift(base)(e)
	if err != nil {
		t.Fatal(err)
	}
	if c := []byte(formats.Xattrs(got.Header)["security.capability"]); len(c) != capV3Size || binary.LittleEndian.Uint32(c[20:]) != 5 {
		t.Errorf("v3 capability % x", c)
	}

	// Ids outside the range are errors that say what is wrong.
	for name, e := range map[string]*formats.Entry{
		"owner uid":   entry(1000, base, nil),
		"owner gid":   entry(base, base+0x10000, nil),
		"acl uid":     entry(base, base, map[string][]byte{"system.posix_acl_access": acl([3]uint32{aclUser, 6, 33})}),
		"capability":  entry(base, base, map[string][]byte{"security.capability": capV3(7)}),
		"malformed":   entry(base, base, map[string][]byte{"system.posix_acl_access": []byte{2, 0, 0, 0, 1}}),
		"acl version": entry(base, base, map[string][]byte{"system.posix_acl_default": acl()[:0:0]}),
	} {
		if _, err := Unshift(base)(e); err == nil {
			t.Errorf("%s: no error", name)
		} else if strings.HasPrefix(name, "owner") || name == "acl uid" || name == "capability" {
			if !errors.Is(err, ErrOutsideShift) || !strings.Contains(err.Error(), "--keep-uid-shift") {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}

func TestDetectShift(t *testing.T) {
	testenv.RequireRoot(t)
	d := t.TempDir()
	if b, err := DetectShift(d); err != nil || b != 0 {
		t.Fatalf("plain dir: %d %v", b, err)
	}
	if err := os.Chown(d, base, base); err != nil {
		t.Fatal(err)
	}
	if b, err := DetectShift(d); err != nil || b != base {
		t.Fatalf("shifted dir: %#x %v", b, err)
	}
	if err := os.Chown(d, base, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := DetectShift(d); err == nil {
		t.Fatal("mismatched uid/gid base accepted")
	}
	if _, err := DetectShift(filepath.Join(d, "nosuch")); err == nil {
		t.Fatal("missing dir accepted")
	}
}

func FuzzShiftACL(f *testing.F) {
	f.Add(acl([3]uint32{aclUser, 6, base + 1}, [3]uint32{aclGroup, 4, base}))
	f.Add(acl())
	f.Add([]byte{2, 0, 0, 0, 1, 2, 3})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		out, err := ShiftACL(v, func(id uint32, _ string) (uint32, error) { return id ^ 0x5a5a, nil })
		if err != nil {
			return
		}
		if len(out) != len(v) {
			t.Fatalf("length changed %d -> %d", len(v), len(out))
		}
		back, err := ShiftACL(out, func(id uint32, _ string) (uint32, error) { return id ^ 0x5a5a, nil })
		if err != nil || string(back) != string(v) {
			t.Fatalf("not an involution: %v", err)
		}
	})
}

func FuzzShiftCapability(f *testing.F) {
	f.Add(capV3(base))
	f.Add(capV3(base + 9))
	f.Add(capV3(0)[:capV2Size])
	f.Add([]byte{0, 0, 0, 3})
	f.Fuzz(func(t *testing.T, v []byte) {
		out, err := ShiftCapability(v, func(id uint32) (uint32, error) {
			if id < base || id-base >= shiftRange {
				return 0, ErrOutsideShift
			}
			return id - base, nil
		})
		if err != nil {
			return
		}
		if len(out) != capV1Size && len(out) != capV2Size && len(out) != capV3Size {
			t.Fatalf("bad output length %d", len(out))
		}
		if len(out) == capV3Size && binary.LittleEndian.Uint32(out[20:]) == 0 {
			t.Fatal("v3 with root id 0 left")
		}
	})
}
