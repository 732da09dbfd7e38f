package export

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/dirtree"
	"github.com/berth-dev/berth/internal/machinelock"
)

// Options say how a machine is read.
type Options struct {
	// KeepUIDShift exports the ids of an nspawn -U tree as they are on disk.
	KeepUIDShift bool
	// Live reads a running machine that can be neither snapshotted nor
	// frozen as it changes, instead of refusing.
	Live bool
	Log  *slog.Logger
}

func (o Options) log() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.Default()
}

// How a Tree is read.
const (
	MethodStopped  = "stopped"  // no machine runs the tree
	MethodSnapshot = "snapshot" // a read-only btrfs snapshot of the running machine
	MethodFrozen   = "frozen"   // the running machine's cgroup is frozen
	MethodLive     = "live"     // read while it runs (--live)
)

// ErrRunning is returned for a running machine that cannot be read
// consistently when Options.Live is not set.
var ErrRunning = errors.New("machine is running")

// Tree is a consistent view of a machine directory, open for reading. Close
// it as soon as the read is done: it may hold a running machine frozen.
type Tree struct {
	// Dir is the directory to read: the machine itself or a snapshot.
	Dir string
	// Method is how consistency is obtained (Method* constants).
	Method string
	// Shift is the nspawn -U UID base that readers undo (0: none or kept).
	Shift uint32

	log      *slog.Logger
	cleanups []func() error
}

// OpenTree prepares dir for a consistent read. A stopped machine is locked
// against nspawn starting it during the read; a running one is snapshotted
// (btrfs subvolume) or frozen (cgroup freezer), or refused with ErrRunning
// unless opts.Live. It never writes to the tree.
func OpenTree(ctx context.Context, dir string, opts Options) (t *Tree, err error) {
	log := opts.log()
	t = &Tree{Dir: dir, log: log}
	defer func() {
		if err != nil {
			if cerr := t.Close(); cerr != nil {
				err = fmt.Errorf("%w; %v", err, cerr)
			}
			t = nil
		}
	}()
	if !opts.KeepUIDShift {
		if t.Shift, err = DetectShift(dir); err != nil {
			return t, err
		}
		if t.Shift != 0 {
			log.Info("undoing the nspawn UID shift", "dir", dir, "base", t.Shift)
		}
	}
	if err := t.consistent(ctx, dir, opts.Live); err != nil {
		return t, err
	}
	return t, nil
}

// consistent runs the running-machine logic shared by trees and raw images:
// it sets Method and registers what Close must undo.
func (t *Tree) consistent(ctx context.Context, path string, live bool) error {
	lock, running, err := machinelock.Shared(path)
	if err != nil {
		return err
	}
	if !running {
		// A machine registered with machined but not locked (nspawn with
		// SYSTEMD_NSPAWN_LOCK=0, another runtime) is running too.
		if st, err := os.Stat(path); err == nil {
			if _, err := machinedLeader(st); err == nil {
				running = true
				lock.Release()
			}
		}
	}
	if !running {
		t.Method = MethodStopped
		t.cleanups = append(t.cleanups, func() error { lock.Release(); return nil })
		return nil
	}
	if isSubvolume(path) {
		snap, del, err := snapshotReadOnly(path)
		if err == nil {
			t.log.Info("machine is running: exporting a read-only btrfs snapshot", "path", path, "snapshot", snap)
			t.Dir, t.Method = snap, MethodSnapshot
			t.cleanups = append(t.cleanups, del)
			return nil
		}
		t.log.Warn("machine is running and its subvolume could not be snapshotted", "path", path, "err", err)
	}
	why := ""
	pid, err := findLeader(ctx, path)
	if err == nil {
		var fr *cgroupFreezer
		if fr, err = freezerFor(pid); err == nil {
			var thaw func() error
			start := time.Now()
			if thaw, err = fr.freeze(ctx); err == nil {
				t.log.Info("machine is running: frozen for the export", "path", path, "cgroup", fr.dir, "leader", pid)
				t.Method = MethodFrozen
				t.cleanups = append(t.cleanups, func() error {
					err := thaw()
					if err == nil {
						t.log.Info("machine thawed", "path", path, "frozen", time.Since(start).Round(time.Millisecond))
					}
					return err
				})
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: freezing the running machine: %w", path, ctx.Err())
		}
		why = fmt.Sprintf("cannot freeze its cgroup (leader pid %d): %v", pid, err)
	} else {
		why = fmt.Sprintf("cannot find it to freeze it: %v", err)
	}
	if !live {
		return fmt.Errorf("%s: %w and is no btrfs subvolume; %s. Stop it, or pass --live to read it while it changes", path, ErrRunning, why)
	}
	t.log.Warn("machine is running and is read live: the export may be inconsistent", "path", path, "reason", why)
	t.Method = MethodLive
	return nil
}

// Source returns the entries of the tree, UID shift undone, with the filters
// applied by Copy. The caller closes the Source before the Tree.
func (t *Tree) Source() (*dirtree.Source, []formats.Filter, error) {
	src, err := dirtree.NewSource(t.Dir, dirtree.SourceOptions{Logger: t.log})
	if err != nil {
		return nil, nil, err
	}
	var filters []formats.Filter
	if t.Shift != 0 {
		filters = append(filters, Unshift(t.Shift))
	}
	return src, filters, nil
}

// Close ends the read: it thaws a frozen machine, deletes a snapshot and
// drops the image lock. It is safe to call more than once.
func (t *Tree) Close() error {
	var errs []error
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		if err := t.cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	t.cleanups = nil
	return errors.Join(errs...)
}

// EstimateSize returns roughly how many bytes a tar of dir holds (headers
// and 512-byte padded contents), from a walk of the metadata that gives up
// after limit and then returns -1. It feeds progress bars only.
func EstimateSize(ctx context.Context, dir string, limit time.Duration) int64 {
	deadline := time.Now().Add(limit)
	var total int64
	n := 0
	stop := errors.New("stop")
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		n++
		if n%256 == 0 && (time.Now().After(deadline) || ctx.Err() != nil) {
			return stop
		}
		total += 512
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += (info.Size() + 511) &^ 511
			}
		}
		return nil
	})
	if err != nil {
		return -1
	}
	return total + 1024
}
