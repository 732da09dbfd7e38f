package raw

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"strings"
	"unicode/utf16"
)

// SectorSize is the logical sector size of the images Write produces. 512
// is what loop devices, systemd-dissect and every hypervisor default to.
const SectorSize = 512

const (
	gptSignature  = "EFI PART"
	gptRevision   = 0x00010000
	gptHeaderSize = 92
	gptEntries    = 128
	gptEntrySize  = 128
	// gptTableSectors is the size of the 128 × 128-byte entry array.
	gptTableSectors = gptEntries * gptEntrySize / SectorSize
	// alignment of the partition start and of the image size: 1 MiB, what
	// fdisk, sgdisk and systemd-repart use.
	alignment = 1 << 20
)

// GUID is a GPT GUID in the canonical (RFC 4122, string) byte order. On
// disk GPT stores the first three fields little-endian; the encoder and
// Inspect convert.
type GUID [16]byte

// ParseGUID parses the 8-4-4-4-12 hexadecimal form.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("GUID %q: want the 8-4-4-4-12 hexadecimal form", s)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil {
		return g, fmt.Errorf("GUID %q: %w", s, err)
	}
	copy(g[:], b)
	return g, nil
}

func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err) // only for the constant table below
	}
	return g
}

func (g GUID) String() string {
	h := hex.EncodeToString(g[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// disk returns the GPT on-disk (mixed-endian) encoding.
func (g GUID) disk() [16]byte {
	var d [16]byte
	d[0], d[1], d[2], d[3] = g[3], g[2], g[1], g[0]
	d[4], d[5] = g[5], g[4]
	d[6], d[7] = g[7], g[6]
	copy(d[8:], g[8:])
	return d
}

func guidFromDisk(d []byte) GUID {
	var g GUID
	g[0], g[1], g[2], g[3] = d[3], d[2], d[1], d[0]
	g[4], g[5] = d[5], d[4]
	g[6], g[7] = d[7], d[6]
	copy(g[8:], d[8:16])
	return g
}

// rootTypes are the Discoverable Partitions Specification root partition
// types, keyed by the architecture designator systemd uses (the one that
// appears in the "root-<arch>" partition designator).
var rootTypes = map[string]GUID{
	"x86":         mustGUID("44479540-f297-41b2-9af7-d131d5f0458a"),
	"x86-64":      mustGUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
	"arm":         mustGUID("69dad710-2ce4-4e3c-b16c-21a1d49abed3"),
	"arm64":       mustGUID("b921b045-1df0-41c3-af44-4c6f280d3fae"),
	"ia64":        mustGUID("993d8d3d-f80e-4225-855a-9daf8ed7ea97"),
	"loongarch64": mustGUID("77055800-792c-4f94-b39a-98c91b762bb6"),
	"mips":        mustGUID("e9434544-6e2c-47cc-bae2-12d6deafb44c"),
	"mips64":      mustGUID("d113af76-80ef-41b4-bdb6-0cff4d3d4a25"),
	"mips-le":     mustGUID("37c58c8a-d913-4156-a25f-48b1b64e07f0"),
	"mips64-le":   mustGUID("700bda43-7a34-4507-b179-eeb93d7a7ca3"),
	"ppc":         mustGUID("1de3f1ef-fa98-47b5-8dcd-4a860a654d78"),
	"ppc64":       mustGUID("912ade1d-a839-4913-8964-a10eee08fbd2"),
	"ppc64-le":    mustGUID("c31c45e6-3f39-412e-80fb-4809c4980599"),
	"riscv32":     mustGUID("60d5a7fe-8e7d-435c-b714-3dd8162144e1"),
	"riscv64":     mustGUID("72ec70a6-cf74-40e6-bd49-4bda08e8f224"),
	"s390x":       mustGUID("5eead9a9-fe09-4a1e-a1d7-520d00531306"),
}

// archAliases maps the names other tools use (Go's GOARCH, Nix's system
// double, uname -m) to the specification's designator.
var archAliases = map[string]string{
	"amd64": "x86-64", "x86_64": "x86-64", "x86_64-linux": "x86-64",
	"386": "x86", "i686": "x86", "i386": "x86", "i686-linux": "x86",
	"aarch64": "arm64", "aarch64-linux": "arm64",
	"armv7l": "arm", "armv6l": "arm", "armv7l-linux": "arm", "armv6l-linux": "arm",
	"riscv64-linux": "riscv64", "ppc64le": "ppc64-le", "powerpc64le-linux": "ppc64-le",
	"loong64": "loongarch64", "loongarch64-linux": "loongarch64", "s390x-linux": "s390x",
	"mipsle": "mips-le", "mips64le": "mips64-le",
}

// RootType returns the Discoverable Partitions Specification root
// partition type for an architecture, and the architecture's canonical
// designator ("x86-64", "arm64", …). Go (amd64), Nix (x86_64-linux) and
// uname (x86_64) names are accepted; "" means x86-64.
func RootType(arch string) (GUID, string, error) {
	a := strings.ToLower(arch)
	if a == "" {
		a = "x86-64"
	}
	if c, ok := archAliases[a]; ok {
		a = c
	}
	g, ok := rootTypes[a]
	if !ok {
		return GUID{}, "", fmt.Errorf("no Discoverable Partitions root type for architecture %q (known: x86-64, arm64, x86, arm, riscv64, ppc64-le, s390x, loongarch64, …)", arch)
	}
	return g, a, nil
}

// Designator returns "root-<arch>" if t is a known root partition type.
func Designator(t GUID) (string, bool) {
	for a, g := range rootTypes {
		if g == t {
			return "root-" + a, true
		}
	}
	return "", false
}

// Partition is one GPT partition entry. LBAs are in SectorSize units and
// LastLBA is inclusive, as on disk.
type Partition struct {
	Index      int // 1-based entry number (what /dev/loop0pN uses)
	Type       GUID
	GUID       GUID
	FirstLBA   uint64
	LastLBA    uint64
	Attributes uint64
	Name       string
}

// Offset and Size give the partition's byte range.
func (p Partition) Offset() int64 { return int64(p.FirstLBA) * SectorSize }
func (p Partition) Size() int64   { return int64(p.LastLBA-p.FirstLBA+1) * SectorSize }

// GPT attribute bits from the Discoverable Partitions Specification.
const (
	AttrReadOnly = 1 << 60
	AttrNoAuto   = 1 << 63
)

// Table is a parsed GUID partition table.
type Table struct {
	DiskGUID       GUID
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	BackupLBA      uint64
	Partitions     []Partition // used entries only, in table order
}

var crcTable = crc32.MakeTable(crc32.IEEE)

// layout describes the image Write assembles: one partition.
type layout struct {
	diskGUID  GUID
	part      Partition
	totalSecs uint64
}

// newLayout places a partition of fsSize bytes at 1 MiB and rounds the
// image up to a whole MiB that also holds the backup table.
func newLayout(fsSize int64, disk GUID, part Partition) layout {
	start := uint64(alignment / SectorSize)
	partSecs := uint64(roundUp(fsSize, alignment) / SectorSize)
	total := start + partSecs + alignment/SectorSize // tail MiB holds the backup GPT
	part.FirstLBA = start
	part.LastLBA = start + partSecs - 1
	part.Index = 1
	return layout{diskGUID: disk, part: part, totalSecs: total}
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

func (l layout) size() int64 { return int64(l.totalSecs) * SectorSize }

// writeGPT writes the protective MBR, the primary GPT (LBA 1, entries from
// LBA 2) and the backup GPT (entries before the last sector, header in it).
func writeGPT(w io.WriterAt, l layout) error {
	last := l.totalSecs - 1
	entries := make([]byte, gptEntries*gptEntrySize)
	e := entries[:gptEntrySize]
	t, g := l.part.Type.disk(), l.part.GUID.disk()
	copy(e[0:16], t[:])
	copy(e[16:32], g[:])
	binary.LittleEndian.PutUint64(e[32:], l.part.FirstLBA)
	binary.LittleEndian.PutUint64(e[40:], l.part.LastLBA)
	binary.LittleEndian.PutUint64(e[48:], l.part.Attributes)
	name := utf16.Encode([]rune(l.part.Name))
	if len(name) > 36 {
		return fmt.Errorf("partition name %q is longer than 36 UTF-16 units", l.part.Name)
	}
	for i, u := range name {
		binary.LittleEndian.PutUint16(e[56+2*i:], u)
	}
	entriesCRC := crc32.Checksum(entries, crcTable)

	header := func(cur, backup, table uint64) []byte {
		h := make([]byte, SectorSize)
		copy(h, gptSignature)
		binary.LittleEndian.PutUint32(h[8:], gptRevision)
		binary.LittleEndian.PutUint32(h[12:], gptHeaderSize)
		binary.LittleEndian.PutUint64(h[24:], cur)
		binary.LittleEndian.PutUint64(h[32:], backup)
		binary.LittleEndian.PutUint64(h[40:], 2+gptTableSectors)      // first usable
		binary.LittleEndian.PutUint64(h[48:], last-1-gptTableSectors) // last usable
		d := l.diskGUID.disk()
		copy(h[56:72], d[:])
		binary.LittleEndian.PutUint64(h[72:], table)
		binary.LittleEndian.PutUint32(h[80:], gptEntries)
		binary.LittleEndian.PutUint32(h[84:], gptEntrySize)
		binary.LittleEndian.PutUint32(h[88:], entriesCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.Checksum(h[:gptHeaderSize], crcTable))
		return h
	}

	mbr := make([]byte, SectorSize)
	p := mbr[446:462]
	p[1], p[2], p[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	p[4] = 0xee                         // GPT protective
	p[5], p[6], p[7] = 0xff, 0xff, 0xff
	binary.LittleEndian.PutUint32(p[8:], 1)
	binary.LittleEndian.PutUint32(p[12:], uint32(min(last, 0xffffffff)))
	mbr[510], mbr[511] = 0x55, 0xaa

	backupTable := last - gptTableSectors
	for _, part := range []struct {
		off int64
		b   []byte
	}{
		{0, mbr},
		{SectorSize, header(1, last, 2)},
		{2 * SectorSize, entries},
		{int64(backupTable) * SectorSize, entries},
		{int64(last) * SectorSize, header(last, 1, backupTable)},
	} {
		if _, err := w.WriteAt(part.b, part.off); err != nil {
			return fmt.Errorf("writing partition table: %w", err)
		}
	}
	return nil
}

// ErrNoGPT is returned by Inspect for data without a valid GUID partition
// table in 512-byte sectors.
var ErrNoGPT = errors.New("no valid GPT")

// Inspect reads and checks the primary GUID partition table of a disk
// image (512-byte sectors): signature, header and entry CRC32s, and that
// every partition lies within the usable area and, when r can tell its size
// (an *os.File, *bytes.Reader, *io.SectionReader), within the image. It is
// meant to sanity-check an image before it is installed, not to repair one:
// any inconsistency is an error.
func Inspect(r io.ReaderAt) (Table, error) {
	var t Table
	size := sizeOf(r)
	h := make([]byte, SectorSize)
	if _, err := r.ReadAt(h, SectorSize); err != nil {
		return t, fmt.Errorf("reading GPT header: %w", err)
	}
	if string(h[:8]) != gptSignature {
		return t, fmt.Errorf("%w: no \"EFI PART\" signature at LBA 1", ErrNoGPT)
	}
	hsize := binary.LittleEndian.Uint32(h[12:])
	if hsize < gptHeaderSize || hsize > SectorSize {
		return t, fmt.Errorf("%w: header size %d", ErrNoGPT, hsize)
	}
	want := binary.LittleEndian.Uint32(h[16:])
	hc := append([]byte(nil), h[:hsize]...)
	clear(hc[16:20])
	if got := crc32.Checksum(hc, crcTable); got != want {
		return t, fmt.Errorf("%w: header CRC32 %08x, computed %08x", ErrNoGPT, want, got)
	}
	if cur := binary.LittleEndian.Uint64(h[24:]); cur != 1 {
		return t, fmt.Errorf("%w: primary header says it is at LBA %d", ErrNoGPT, cur)
	}
	t.BackupLBA = binary.LittleEndian.Uint64(h[32:])
	t.FirstUsableLBA = binary.LittleEndian.Uint64(h[40:])
	t.LastUsableLBA = binary.LittleEndian.Uint64(h[48:])
	t.DiskGUID = guidFromDisk(h[56:72])
	tableLBA := binary.LittleEndian.Uint64(h[72:])
	n := binary.LittleEndian.Uint32(h[80:])
	esize := binary.LittleEndian.Uint32(h[84:])
	if esize < gptEntrySize || esize > 4096 || esize%8 != 0 || n == 0 || n > 1024 {
		return t, fmt.Errorf("%w: %d entries of %d bytes", ErrNoGPT, n, esize)
	}
	if t.FirstUsableLBA > t.LastUsableLBA || tableLBA < 2 || tableLBA > 1<<40 {
		return t, fmt.Errorf("%w: usable LBAs %d-%d, entries at LBA %d", ErrNoGPT, t.FirstUsableLBA, t.LastUsableLBA, tableLBA)
	}
	if t.LastUsableLBA >= 1<<54 || t.BackupLBA >= 1<<54 {
		return t, fmt.Errorf("%w: LBAs beyond 8 EiB", ErrNoGPT)
	}
	if size >= 0 {
		secs := uint64(size / SectorSize)
		if t.LastUsableLBA >= secs || t.BackupLBA >= secs {
			return t, fmt.Errorf("%w: table describes %d sectors, image has %d (truncated?)", ErrNoGPT, max(t.LastUsableLBA, t.BackupLBA)+1, secs)
		}
	}
	entries := make([]byte, int(n)*int(esize))
	if _, err := r.ReadAt(entries, int64(tableLBA)*SectorSize); err != nil {
		return t, fmt.Errorf("reading GPT entries: %w", err)
	}
	if got, want := crc32.Checksum(entries, crcTable), binary.LittleEndian.Uint32(h[88:]); got != want {
		return t, fmt.Errorf("%w: entry array CRC32 %08x, computed %08x", ErrNoGPT, want, got)
	}
	for i := 0; i < int(n); i++ {
		e := entries[i*int(esize) : (i+1)*int(esize)]
		var typ GUID
		if typ = guidFromDisk(e[0:16]); typ == (GUID{}) {
			continue
		}
		p := Partition{
			Index:      i + 1,
			Type:       typ,
			GUID:       guidFromDisk(e[16:32]),
			FirstLBA:   binary.LittleEndian.Uint64(e[32:]),
			LastLBA:    binary.LittleEndian.Uint64(e[40:]),
			Attributes: binary.LittleEndian.Uint64(e[48:]),
		}
		u := make([]uint16, 0, 36)
		for j := 56; j+1 < 128; j += 2 {
			c := binary.LittleEndian.Uint16(e[j:])
			if c == 0 {
				break
			}
			u = append(u, c)
		}
		p.Name = string(utf16.Decode(u))
		if p.FirstLBA > p.LastLBA || p.FirstLBA < t.FirstUsableLBA || p.LastLBA > t.LastUsableLBA {
			return t, fmt.Errorf("%w: partition %d spans LBAs %d-%d outside the usable %d-%d", ErrNoGPT, p.Index, p.FirstLBA, p.LastLBA, t.FirstUsableLBA, t.LastUsableLBA)
		}
		for _, q := range t.Partitions {
			if p.FirstLBA <= q.LastLBA && q.FirstLBA <= p.LastLBA {
				return t, fmt.Errorf("%w: partitions %d and %d overlap", ErrNoGPT, q.Index, p.Index)
			}
		}
		t.Partitions = append(t.Partitions, p)
	}
	return t, nil
}

// sizeOf returns the size of r if it can tell, else -1.
func sizeOf(r io.ReaderAt) int64 {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		return v.Size()
	case interface{ Stat() (fs.FileInfo, error) }:
		if fi, err := v.Stat(); err == nil && fi.Mode().IsRegular() {
			return fi.Size()
		}
	}
	return -1
}
