package raw

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/internal/scratch"
)

const (
	ext4Block     = 4096
	ext4InodeSize = 256
)

// ext4Usage adds up, while the tree is staged, what the file system will
// need: data blocks, directory blocks, inodes.
type ext4Usage struct {
	bytes  int64 // data, directory and xattr blocks
	inodes int64
}

func (u *ext4Usage) filter(e *formats.Entry) (*formats.Entry, error) {
	h := e.Header
	u.inodes++
	switch h.Typeflag {
	case tar.TypeReg:
		// Data blocks, plus one extent block per 128 MiB for files whose
		// extents do not fit in the inode.
		u.bytes += roundUp(h.Size, ext4Block) + h.Size/(128<<20)*ext4Block
	case tar.TypeDir:
		u.bytes += ext4Block
	case tar.TypeSymlink:
		if len(h.Linkname) >= 60 { // longer targets need a block
			u.bytes += ext4Block
		}
	case tar.TypeLink:
		u.inodes-- // a name, not an inode
	}
	// The directory entry: 8 bytes plus the name, 4-aligned, in its parent.
	base := h.Name[strings.LastIndexByte(h.Name, '/')+1:]
	u.bytes += int64(8+len(base)+3) &^ 3
	// Extended attributes beyond the ~100 bytes that fit in a 256-byte
	// inode go to a block of their own.
	var xlen int
	for k, v := range formats.Xattrs(h) {
		xlen += 16 + len(k) + len(v)
	}
	if xlen > 96 {
		u.bytes += roundUp(int64(xlen), ext4Block)
	}
	return e, nil
}

// size returns the file-system size to ask mke2fs for: the content, the
// inode tables, 10% and 32 MiB of free space and the journal.
func (u *ext4Usage) size(inodes int64) (fsBytes, journalMiB int64) {
	n := u.bytes + inodes*ext4InodeSize
	n += n/10 + 32<<20
	journalMiB = 16
	if n > 1<<30 {
		journalMiB = 64
	}
	return roundUp(n+journalMiB<<20, alignment), journalMiB
}

// writeExt4 stages the tree in a temporary directory (Debian 12's mke2fs
// 1.47.0 can only read a directory, and the size must be known before mkfs
// anyway, which a single-pass Source cannot tell without reading it),
// then runs mke2fs -d writing straight into out at offset.
func writeExt4(ctx context.Context, out *os.File, offset int64, src formats.Source, check formats.Filter, c config, seed func() []byte) (int64, error) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return 0, errors.New("mkfs.ext4 not found: install e2fsprogs (Debian package e2fsprogs)")
	}
	if os.Geteuid() != 0 {
		return 0, errors.New("an ext4 image needs root to stage owners, device nodes and capabilities (Debian 12's mke2fs cannot read a tar): run as root, or use squashfs")
	}
	// A scratch directory: if the job is killed, the next one removes it.
	item, err := scratch.Dir(c.WorkDir, "stage")
	if err != nil {
		return 0, fmt.Errorf("staging directory: %w", err)
	}
	stage := item.Path
	defer func() {
		if err := item.Remove(); err != nil {
			c.Log.Warn("could not remove the ext4 staging tree", "dir", stage, "err", err)
		}
	}()
	// The root keeps this mode unless the source has a "." entry.
	if err := os.Chmod(stage, 0o755); err != nil {
		return 0, err
	}
	sink, err := dirtree.NewSink(stage, dirtree.Options{Logger: c.Log})
	if err != nil {
		return 0, err
	}
	var usage ext4Usage
	t0 := time.Now()
	c.Log.Info("staging tree for mkfs.ext4", "dir", stage)
	if _, err := formats.Copy(ctx, sink, src, check, usage.filter); err != nil {
		sink.Abort()
		return 0, fmt.Errorf("staging the tree: %w", err)
	}
	if err := sink.Close(); err != nil {
		return 0, fmt.Errorf("staging the tree: %w", err)
	}
	s := seed()
	fsUUID, hashSeed := deriveGUID(s, "filesystem"), deriveGUID(s, "ext4 hash seed")
	label := c.Label
	if len(label) > 16 {
		label = label[:16]
	}
	inodes := usage.inodes + usage.inodes/4 + 1024
	size, journal := usage.size(inodes)
	c.Log.Debug("tree staged", "elapsed", time.Since(t0).Round(time.Millisecond), "content_bytes", usage.bytes, "inodes", usage.inodes)
	// An estimate can fall short (huge directories, fragmented extents):
	// grow and retry. The sequence depends only on the tree, so the output
	// stays reproducible.
	for attempt := 0; ; attempt++ {
		t1 := time.Now()
		err = runMkfsExt4(ctx, mkfs, out, offset, stage, size, inodes, journal, label, fsUUID, hashSeed)
		if err == nil {
			c.Log.Info("mkfs.ext4 done", "bytes", size, "elapsed", time.Since(t1).Round(time.Millisecond))
			break
		}
		if ctx.Err() != nil || !errors.Is(err, errNoSpace) || attempt == 3 {
			return 0, err
		}
		size = roundUp(size+size/2, alignment)
		c.Log.Info("ext4 estimate too small, retrying", "bytes", size)
		if err := out.Truncate(0); err != nil {
			return 0, err
		}
	}
	if err := fixExt4Ctimes(out, offset); err != nil {
		return 0, fmt.Errorf("normalising inode change times: %w", err)
	}
	return size, nil
}

var errNoSpace = errors.New("file system too small")

func runMkfsExt4(ctx context.Context, mkfs string, out *os.File, offset int64, stage string, size, inodes, journalMiB int64, label string, fsUUID, hashSeed GUID) error {
	// -F twice: the target is our own new file, never a device in use, but
	// mke2fs calls it "mounted" when a stale loop device still holds a
	// deleted file whose inode number the new file reused.
	args := []string{
		"-q", "-F", "-F", "-t", "ext4", "-T", "default",
		"-b", strconv.Itoa(ext4Block), "-I", strconv.Itoa(ext4InodeSize),
		"-N", strconv.FormatInt(inodes, 10), "-m", "0",
		"-J", "size=" + strconv.FormatInt(journalMiB, 10),
		"-L", label, "-U", fsUUID.String(),
		"-E", fmt.Sprintf("hash_seed=%s,root_owner=0:0,offset=%d,lazy_itable_init=1,lazy_journal_init=1,nodiscard", hashSeed, offset),
		"-d", stage,
		"/dev/fd/3", strconv.FormatInt(size/ext4Block, 10),
	}
	cmd := exec.CommandContext(ctx, mkfs, args...)
	cmd.ExtraFiles = []*os.File{out}
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+strconv.Itoa(fakeTime), "SOURCE_DATE_EPOCH="+strconv.Itoa(fakeTime))
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		msg := stderr.String()
		if strings.Contains(msg, "Could not allocate") || strings.Contains(msg, "No space left") ||
			strings.Contains(msg, "Could not allocate inode") || strings.Contains(msg, "too small") {
			return fmt.Errorf("%w: mkfs.ext4: %s", errNoSpace, msg)
		}
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// tailBuffer keeps the last 4 KiB written to it: enough of a tool's
// complaint for an error line, bounded whatever the tool prints.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = append(t.b[:0], t.b[len(t.b)-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	return strings.Join(strings.Fields(string(bytes.ToValidUTF8(t.b, nil))), " ")
}

// ext4 on-disk constants (fs/ext4/ext4.h).
const (
	ext4Magic            = 0xef53
	ext4IncompatExtents  = 0x40
	ext4Incompat64bit    = 0x80
	ext4IncompatCsumSeed = 0x2000
	ext4RoCompatGdtCsum  = 0x10
	ext4RoCompatMetaCsum = 0x400
	ext4BgInodeUninit    = 0x1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's crc32c_le: no pre- or post-inversion.
func crc32c(seed uint32, p []byte) uint32 { return ^crc32.Update(^seed, castagnoli, p) }

// fixExt4Ctimes sets every in-use inode's change and access times to its
// modification time and recomputes the inode checksum. mke2fs -d copies
// st_ctime and st_atime from the staging tree: the moment of staging, which
// user space cannot set; without this no two images would be identical. Each inode's
// stored checksum is verified before it is rewritten, so a layout this
// code does not understand is an error, never silent corruption.
func fixExt4Ctimes(f *os.File, off int64) error {
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, off+1024); err != nil {
		return fmt.Errorf("reading superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != ext4Magic {
		return errors.New("no ext4 superblock")
	}
	inodesCount := le.Uint32(sb[0x00:])
	firstData := le.Uint32(sb[0x14:])
	bs := int64(1024) << le.Uint32(sb[0x18:])
	ipg := le.Uint32(sb[0x28:])
	isz := int64(le.Uint16(sb[0x58:]))
	incompat := le.Uint32(sb[0x60:])
	roCompat := le.Uint32(sb[0x64:])
	if bs > 65536 || ipg == 0 || isz < 128 || isz > bs || inodesCount == 0 {
		return errors.New("unexpected ext4 geometry")
	}
	descSize := int64(32)
	if incompat&ext4Incompat64bit != 0 {
		descSize = int64(le.Uint16(sb[0xfe:]))
	}
	metaCsum := roCompat&ext4RoCompatMetaCsum != 0
	var csumSeed uint32
	if incompat&ext4IncompatCsumSeed != 0 {
		csumSeed = le.Uint32(sb[0x270:])
	} else {
		csumSeed = crc32c(^uint32(0), sb[0x68:0x78])
	}
	groups := (int64(inodesCount) + int64(ipg) - 1) / int64(ipg)
	gdt := make([]byte, groups*descSize)
	if _, err := f.ReadAt(gdt, off+(int64(firstData)+1)*bs); err != nil {
		return fmt.Errorf("reading group descriptors: %w", err)
	}
	bitmap := make([]byte, bs)
	for g := int64(0); g < groups; g++ {
		d := gdt[g*descSize : (g+1)*descSize]
		if le.Uint16(d[0x12:])&ext4BgInodeUninit != 0 {
			continue
		}
		ibm, itab := int64(le.Uint32(d[0x04:])), int64(le.Uint32(d[0x08:]))
		used := int64(ipg)
		if roCompat&(ext4RoCompatGdtCsum|ext4RoCompatMetaCsum) != 0 {
			used -= int64(le.Uint16(d[0x1c:]))
		}
		if descSize >= 64 {
			ibm |= int64(le.Uint32(d[0x24:])) << 32
			itab |= int64(le.Uint32(d[0x28:])) << 32
			if roCompat&(ext4RoCompatGdtCsum|ext4RoCompatMetaCsum) != 0 {
				used = int64(ipg) - (int64(le.Uint16(d[0x1c:])) | int64(le.Uint16(d[0x32:]))<<16)
			}
		}
		if used <= 0 {
			continue
		}
		if used > int64(ipg) {
			return fmt.Errorf("group %d: %d inodes in use of %d", g, used, ipg)
		}
		if _, err := f.ReadAt(bitmap, off+ibm*bs); err != nil {
			return fmt.Errorf("group %d: reading inode bitmap: %w", g, err)
		}
		table := make([]byte, used*isz)
		if _, err := f.ReadAt(table, off+itab*bs); err != nil {
			return fmt.Errorf("group %d: reading inode table: %w", g, err)
		}
		changed := false
		for i := int64(0); i < used; i++ {
			if bitmap[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			ino := uint32(g*int64(ipg) + i + 1)
			in := table[i*isz : (i+1)*isz]
			if le.Uint16(in[0:]) == 0 { // reserved inode without a file
				continue
			}
			extra := int64(0)
			if isz > 128 {
				extra = int64(le.Uint16(in[0x80:]))
			}
			if metaCsum {
				want := uint32(le.Uint16(in[0x7c:]))
				if extra >= 4 {
					want |= uint32(le.Uint16(in[0x82:])) << 16
				}
				if got := inodeCsum(csumSeed, ino, in, extra); got != want && (extra >= 4 || uint16(got) != uint16(want)) {
					return fmt.Errorf("inode %d: checksum %08x, computed %08x: unexpected ext4 layout", ino, want, got)
				}
			}
			mtime := le.Uint32(in[0x10:])
			le.PutUint32(in[0x08:], mtime) // i_atime
			le.PutUint32(in[0x0c:], mtime) // i_ctime
			if extra >= 16 {
				mx := le.Uint32(in[0x88:])  // i_mtime_extra
				le.PutUint32(in[0x84:], mx) // i_ctime_extra
				le.PutUint32(in[0x8c:], mx) // i_atime_extra
			}
			if metaCsum {
				sum := inodeCsum(csumSeed, ino, in, extra)
				le.PutUint16(in[0x7c:], uint16(sum))
				if extra >= 4 {
					le.PutUint16(in[0x82:], uint16(sum>>16))
				}
			}
			changed = true
		}
		if changed {
			if _, err := f.WriteAt(table, off+itab*bs); err != nil {
				return fmt.Errorf("group %d: writing inode table: %w", g, err)
			}
		}
	}
	return nil
}

// inodeCsum is ext4_inode_csum: crc32c over the inode number, generation
// and the whole inode with its checksum fields read as zero.
func inodeCsum(seed, ino uint32, in []byte, extra int64) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], ino)
	c := crc32c(seed, b[:])
	c = crc32c(c, in[0x64:0x68]) // i_generation
	var zero [2]byte
	c = crc32c(c, in[:0x7c])
	c = crc32c(c, zero[:])
	if len(in) <= 128 {
		return crc32c(c, in[0x7e:])
	}
	c = crc32c(c, in[0x7e:0x82])
	if extra >= 4 {
		c = crc32c(c, zero[:])
		return crc32c(c, in[0x84:])
	}
	return crc32c(c, in[0x82:])
}
