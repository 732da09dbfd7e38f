package raw

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/berth-dev/berth/formats"
)

// writeSquashfs streams the tree as a tar into sqfstar (squashfs-tools ≥
// 4.5), which writes the file system straight into out at offset: no
// staging, no temporary file. sqfstar ignores a tar entry for the root
// directory, so the "." entry, which a Source yields first, is turned into
// -root-* options (its extended attributes cannot be carried).
//
// Timestamps: sqfstar 4.5.1 ignores -root-time, so the only way to keep the
// root directory from getting the current time (and the image from
// differing run to run) is -all-time, which gives every inode one time: the
// root entry's modification time. For a Nix system, where every mtime is 1,
// nothing is lost; a tree with varied mtimes loses them in squashfs (ext4
// keeps them).
func writeSquashfs(ctx context.Context, out *os.File, offset int64, src formats.Source, check formats.Filter, c config) (int64, error) {
	bin, err := exec.LookPath("sqfstar")
	if err != nil {
		return 0, errors.New("sqfstar not found: install squashfs-tools 4.5 or later (Debian package squashfs-tools)")
	}
	first, err := nextChecked(src, check)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	rootMode, rootUID, rootGID, rootTime := int64(0o755), 0, 0, int64(fakeTime)
	if first != nil && first.Header.Name == "." {
		h := first.Header
		rootMode, rootUID, rootGID = h.Mode&07777, h.Uid, h.Gid
		rootTime = min(max(h.ModTime.Unix(), 0), 1<<32-1)
		if len(formats.Xattrs(h)) > 0 {
			c.Log.Warn("squashfs: extended attributes of the root directory are dropped (sqfstar cannot set them)")
		}
		first = nil
	}
	ts := strconv.FormatInt(rootTime, 10)
	args := []string{
		"-force", "-quiet", "-no-progress", "-reproducible", "-exit-on-error",
		"-mem", "64M", // default: a quarter of RAM; 64M keeps RSS near 64 MiB and is no slower
		"-comp", c.Compression,
		"-mkfs-time", ts, "-all-time", ts,
		"-root-mode", strconv.FormatInt(rootMode, 8),
		"-root-uid", strconv.Itoa(rootUID), "-root-gid", strconv.Itoa(rootGID),
		"-offset", strconv.FormatInt(offset, 10),
		"/dev/fd/3",
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.ExtraFiles = []*os.File{out}
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	c.Log.Info("streaming tree into sqfstar")
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting sqfstar: %w", err)
	}
	bw := bufio.NewWriterSize(stdin, 1<<20)
	tw := formats.NewTarSink(bw, formats.TarOptions{})
	copyErr := func() error {
		if first != nil {
			if err := tw.WriteEntry(first); err != nil {
				return err
			}
		}
		if _, err := formats.Copy(ctx, tw, src, check); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return bw.Flush()
	}()
	if copyErr != nil && cmd.Process != nil {
		cmd.Process.Kill()
	}
	stdin.Close()
	waitErr := cmd.Wait()
	switch {
	case copyErr != nil && waitErr != nil && !isPipeErr(copyErr):
		return 0, copyErr
	case waitErr != nil:
		return 0, fmt.Errorf("sqfstar: %w: %s", waitErr, stderr.String())
	case copyErr != nil:
		return 0, copyErr
	}
	fi, err := out.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size() - offset
	if size <= 0 {
		return 0, errors.New("sqfstar wrote nothing")
	}
	c.Log.Info("sqfstar done", "bytes", size, "elapsed", time.Since(t0).Round(time.Millisecond))
	return size, nil
}

// nextChecked reads one entry from src through check (which never drops
// entries).
func nextChecked(src formats.Source, check formats.Filter) (*formats.Entry, error) {
	e, err := src.Next()
	if err != nil {
		return nil, err
	}
	return check(e)
}

func isPipeErr(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, syscall.EPIPE)
}
