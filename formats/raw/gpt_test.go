package raw

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

var (
	testDisk = mustGUID("0b5bb3b0-5f1a-4d6e-9a6c-2f4d1e0c9a11")
	testPart = mustGUID("6d3c8a2e-1c4b-4f7a-8e2d-9b0a1c2d3e4f")
)

// memImage is an in-memory io.WriterAt/ReaderAt.
type memImage struct{ b []byte }

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func tinyTable(t testing.TB) []byte {
	// A layout far smaller than Write ever makes, for fuzzing: 100 sectors,
	// the partition in the usable area 34..66.
	l := layout{diskGUID: testDisk, totalSecs: 100,
		part: Partition{Index: 1, Type: rootTypes["x86-64"], GUID: testPart, FirstLBA: 34, LastLBA: 60, Name: "root-x86-64"}}
	m := &memImage{b: make([]byte, 100*SectorSize)}
	if err := writeGPT(m, l); err != nil {
		t.Fatal(err)
	}
	return m.b
}

func TestGPTAgainstTools(t *testing.T) {
	sfdisk := testenv.RequireTool(t, "sfdisk")
	sgdisk := testenv.RequireTool(t, "sgdisk")
	for _, fsSize := range []int64{1, 4096, alignment, 3*alignment + 512, 64 << 20} {
		typ, _, _ := RootType("arm64")
		l := newLayout(fsSize, testDisk, Partition{Type: typ, GUID: testPart, Name: "root-arm64", Attributes: AttrReadOnly})
		img := filepath.Join(t.TempDir(), "t.raw")
		f, err := os.Create(img)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(l.size()); err != nil {
			t.Fatal(err)
		}
		if err := writeGPT(f, l); err != nil {
			t.Fatal(err)
		}
		tab, err := Inspect(f)
		f.Close()
		if err != nil {
			t.Fatalf("size %d: Inspect: %v", fsSize, err)
		}
		p := tab.Partitions[0]
		if tab.DiskGUID != testDisk || p.GUID != testPart || p.Type != typ || p.Name != "root-arm64" ||
			p.Attributes != AttrReadOnly || p.Offset() != alignment || p.Size() < fsSize || p.Size()%alignment != 0 ||
			l.size()%alignment != 0 || tab.BackupLBA != uint64(l.size()/SectorSize-1) {
			t.Errorf("size %d: table %+v, layout %+v", fsSize, tab, l)
		}
		if d, ok := Designator(p.Type); !ok || d != "root-arm64" {
			t.Errorf("designator %q", d)
		}
		run(t, sfdisk, "--verify", img)
		dump := run(t, sfdisk, "--dump", img)
		for _, want := range []string{
			"label: gpt", "label-id: " + strings.ToUpper(testDisk.String()),
			"start=        2048", "type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
			"uuid=" + strings.ToUpper(testPart.String()), `name="root-arm64"`, "attrs=\"GUID:60\"",
			"first-lba: 34", "sector-size: 512",
		} {
			if !strings.Contains(dump, want) {
				t.Errorf("size %d: sfdisk --dump lacks %q:\n%s", fsSize, want, dump)
			}
		}
		if out := run(t, sgdisk, "-v", img); !strings.Contains(out, "No problems found") {
			t.Errorf("size %d: sgdisk -v:\n%s", fsSize, out)
		}
		// The protective MBR covers the disk after LBA 0.
		raw, _ := os.ReadFile(img)
		if raw[450] != 0xee || raw[510] != 0x55 || raw[511] != 0xaa ||
			binary.LittleEndian.Uint32(raw[454:]) != 1 || binary.LittleEndian.Uint32(raw[458:]) != uint32(l.totalSecs-1) {
			t.Errorf("size %d: protective MBR wrong: % x", fsSize, raw[446:462])
		}
	}
}

func TestRootType(t *testing.T) {
	for in, want := range map[string]string{
		"": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "amd64": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
		"x86_64-linux": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "aarch64-linux": "b921b045-1df0-41c3-af44-4c6f280d3fae",
		"ARM64": "b921b045-1df0-41c3-af44-4c6f280d3fae", "riscv64": "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
	} {
		g, _, err := RootType(in)
		if err != nil || g.String() != want {
			t.Errorf("RootType(%q) = %s, %v; want %s", in, g, err, want)
		}
	}
	if _, _, err := RootType("pdp11"); err == nil {
		t.Error("RootType(pdp11) succeeded")
	}
	if _, err := (Options{FS: "btrfs"}).config(); err == nil {
		t.Error("unknown file system accepted")
	}
}

// reCRC recomputes the entry-array and header CRCs after a test edits them.
func reCRC(b []byte) {
	h := b[SectorSize : 2*SectorSize]
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(b[2*SectorSize:2*SectorSize+gptEntries*gptEntrySize]))
	clear(h[16:20])
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:gptHeaderSize]))
}

func TestInspectRejects(t *testing.T) {
	good := tinyTable(t)
	if _, err := Inspect(bytes.NewReader(good)); err != nil {
		t.Fatalf("valid table refused: %v", err)
	}
	entry := 2 * SectorSize
	for name, edit := range map[string]func(b []byte) []byte{
		"no signature":   func(b []byte) []byte { b[SectorSize] = 'X'; return b },
		"header crc":     func(b []byte) []byte { b[SectorSize+60]++; return b },
		"entry crc":      func(b []byte) []byte { b[entry+60]++; return b },
		"truncated":      func(b []byte) []byte { return b[:50*SectorSize] },
		"short":          func(b []byte) []byte { return b[:SectorSize+100] },
		"beyond usable":  func(b []byte) []byte { binary.LittleEndian.PutUint64(b[entry+40:], 90); reCRC(b); return b },
		"reversed":       func(b []byte) []byte { binary.LittleEndian.PutUint64(b[entry+32:], 61); reCRC(b); return b },
		"huge entry num": func(b []byte) []byte { binary.LittleEndian.PutUint32(b[SectorSize+80:], 1<<30); reCRC(b); return b },
		"overlap": func(b []byte) []byte {
			copy(b[entry+gptEntrySize:entry+2*gptEntrySize], b[entry:entry+gptEntrySize])
			reCRC(b)
			return b
		},
	} {
		b := edit(append([]byte(nil), good...))
		if _, err := Inspect(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name != "short" && name != "truncated" && !errors.Is(err, ErrNoGPT) {
			t.Errorf("%s: error %v does not match ErrNoGPT", name, err)
		}
	}
}

func FuzzInspect(f *testing.F) {
	good := tinyTable(f)
	f.Add(good)
	f.Add(good[:34*SectorSize])
	f.Add(make([]byte, 2*SectorSize))
	b := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(b[SectorSize+80:], 4)
	binary.LittleEndian.PutUint32(b[SectorSize+84:], 512)
	reCRC(b)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Inspect(bytes.NewReader(data))
		if err != nil {
			return
		}
		secs := uint64(len(data) / SectorSize)
		for i, p := range tab.Partitions {
			if p.FirstLBA > p.LastLBA || p.LastLBA >= secs || p.FirstLBA < tab.FirstUsableLBA || p.LastLBA > tab.LastUsableLBA {
				t.Fatalf("partition %+v out of bounds (%d sectors, table %+v)", p, secs, tab)
			}
			for _, q := range tab.Partitions[:i] {
				if p.FirstLBA <= q.LastLBA && q.FirstLBA <= p.LastLBA {
					t.Fatalf("overlapping partitions accepted: %+v %+v", p, q)
				}
			}
		}
	})
}
