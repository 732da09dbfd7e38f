package pull

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/berth-dev/berth/formats/compress"
	"github.com/berth-dev/berth/internal/ctxio"
	"github.com/berth-dev/berth/internal/imageroot"
)

// sparseBlock is the granularity of hole detection. 4 KiB is the block
// size of the file systems an image root lives on; a coarser grain would
// lose holes, a finer one only costs time.
const sparseBlock = 4096

// WriteSparse copies r into the empty file f, seeking over all-zero blocks
// instead of writing them, so that a disk image with free space stays
// sparse (systemd's copy of a pulled raw image is not). It returns the
// logical size written; the file is truncated to that size at the end.
func WriteSparse(f *os.File, r io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := writeSparseChunk(f, buf[:n], off); err != nil {
				return off, err
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return off, rerr
		}
	}
	if err := f.Truncate(off); err != nil {
		return off, fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	return off, nil
}

func writeSparseChunk(f *os.File, b []byte, off int64) error {
	for len(b) > 0 {
		n := min(sparseBlock, len(b))
		// Coalesce a run of non-zero blocks into one write.
		if !allZero(b[:n]) {
			end := n
			for end < len(b) {
				m := min(sparseBlock, len(b)-end)
				if allZero(b[end : end+m]) {
					break
				}
				end += m
			}
			if _, err := f.WriteAt(b[:end], off); err != nil {
				return fmt.Errorf("writing %s: %w", f.Name(), err)
			}
			n = end
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ImportRaw writes the disk image read from r (any supported compression,
// detected from its first bytes) sparsely into the image root as
// name.raw, through a hidden work file.
func ImportRaw(ctx context.Context, root *imageroot.Root, r io.Reader, name string, opts ImportOptions) (err error) {
	log := opts.logOr(root.Log)
	unlock, err := lockImport(ctx, root, name, opts.Force)
	if err != nil {
		return err
	}
	defer unlock()
	dr, kind, err := compress.NewReader(ctxio.Reader(ctx, r), compress.WithSpillDir(root.Dir))
	if errors.Is(err, io.EOF) {
		return errors.New("reading image: input is empty")
	}
	if err != nil {
		return fmt.Errorf("reading image: %w", err)
	}
	defer dr.Close()
	f, err := root.WorkFile(name)
	if err != nil {
		return err
	}
	work := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			removeWorkOnError(root, log, &work, &err)
		}
	}()
	log.Debug("importing raw image", "image", name, "compression", kind, "into", work)
	n, err := WriteSparse(f, ctxio.Reader(ctx, dr))
	if err != nil {
		return fmt.Errorf("reading image: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", work, err)
	}
	if err := root.Install(work, name+".raw", opts.InstallOptions); err != nil {
		return err
	}
	log.Info("imported", "image", name, "path", root.Path(name+".raw"), "bytes", n)
	return nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func imagerootStripped(typ ImageType, file string) string {
	if typ == Raw {
		return imageroot.RawName(file)
	}
	return imageroot.TarName(file)
}
