package export

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/formats"
	"github.com/berth-dev/berth/formats/oci"
)

// OCIOptions control an OCI export.
type OCIOptions struct {
	KeepUIDShift bool
	Live         bool
	Log          *slog.Logger
	// Compression of the layer ("" is zstd).
	Compression oci.LayerCompression
	// Arch is the image architecture (GOARCH name); "" is this machine's.
	Arch string
	// Settings is the machine's .nspawn file; "" looks for one next to the
	// machine and in /etc/systemd/nspawn and /run/systemd/nspawn.
	Settings string
	// TmpDir holds the (unlinked) layer file; "" is os.TempDir().
	TmpDir string
	// Meter, if set, wraps the content of each file read (progress).
	Meter func(io.Reader) io.Reader
}

// OCIImage makes the machine tree at dir into a one-layer OCI image, read
// consistently and UID shift undone as for Tar. The running machine is held
// (frozen, snapshotted, locked) only while the layer is written, not while
// the image is pushed or saved. Its configuration comes from the machine's
// .nspawn settings ([Exec] Boot=, Parameters=, Environment=,
// WorkingDirectory=, User=); without one, a tree with /sbin/init gets it as
// its command. release frees the layer's temporary file.
func OCIImage(ctx context.Context, dir string, opts OCIOptions) (img v1.Image, release func() error, err error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	cfg, err := machineConfig(dir, opts.Settings, log)
	if err != nil {
		return nil, nil, err
	}
	cfg.Arch = opts.Arch
	if cfg.Arch == "" {
		cfg.Arch = runtime.GOARCH
	}
	layer, err := ociLayer(ctx, dir, opts)
	if err != nil {
		return nil, nil, err
	}
	img, err = oci.NewImage([]v1.Layer{layer}, cfg)
	if err != nil {
		layer.Close()
		return nil, nil, err
	}
	return img, layer.Close, nil
}

func ociLayer(ctx context.Context, dir string, opts OCIOptions) (l *oci.Layer, err error) {
	t, err := OpenTree(ctx, dir, Options{KeepUIDShift: opts.KeepUIDShift, Live: opts.Live, Log: opts.Log})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := t.Close(); cerr != nil && err == nil {
			l.Close()
			l, err = nil, cerr
		}
	}()
	src, filters, err := t.Source()
	if err != nil {
		return nil, err
	}
	defer src.Close()
	if opts.Meter != nil {
		filters = append(filters, func(e *formats.Entry) (*formats.Entry, error) {
			if e.Body != nil {
				e.Body = opts.Meter(e.Body)
			}
			return e, nil
		})
	}
	var layer *oci.Layer
	err = promptly(ctx, func() (err error) {
		layer, err = oci.NewLayer(ctx, &filtered{src: src, filters: filters}, opts.Compression, opts.TmpDir)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", dir, err)
	}
	return layer, nil
}

// filtered applies filters to a Source, for sinks that take a Source.
type filtered struct {
	src     formats.Source
	filters []formats.Filter
}

func (f *filtered) Next() (*formats.Entry, error) {
	for {
		e, err := f.src.Next()
		if err != nil {
			return nil, err
		}
		name := e.Header.Name
		for _, fl := range f.filters {
			if e, err = fl(e); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if e == nil {
				break
			}
		}
		if e != nil {
			return e, nil
		}
	}
}

// settingsFor finds the .nspawn file of the machine at dir, in nspawn's own
// order: /etc/systemd/nspawn, /run/systemd/nspawn, then next to the image.
func settingsFor(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	name := filepath.Base(abs) + ".nspawn"
	for _, p := range []string{
		filepath.Join("/etc/systemd/nspawn", name),
		filepath.Join("/run/systemd/nspawn", name),
		filepath.Join(filepath.Dir(abs), name),
	} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

func machineConfig(dir, settings string, log *slog.Logger) (oci.ImageConfig, error) {
	if log == nil {
		log = slog.Default()
	}
	if settings == "" {
		settings = settingsFor(dir)
	}
	var cfg oci.ImageConfig
	if settings != "" {
		b, err := os.ReadFile(settings)
		if err != nil {
			return cfg, err
		}
		ns, err := ParseNspawn(b)
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", settings, err)
		}
		log.Info("image configuration from the machine's settings", "file", settings)
		cfg.Env, cfg.WorkingDir, cfg.User = ns.Environment, ns.WorkingDirectory, ns.User
		switch {
		case ns.Boot:
			cfg.Cmd = append([]string{"/sbin/init"}, ns.Parameters...)
		case len(ns.Parameters) > 0:
			cfg.Cmd = ns.Parameters
		}
		if ns.KillSignal != "" {
			cfg.StopSignal = ns.KillSignal
		}
	}
	if cfg.Cmd == nil {
		if _, err := os.Lstat(filepath.Join(dir, "sbin/init")); err == nil {
			cfg.Cmd = []string{"/sbin/init"}
		}
	}
	return cfg, nil
}

// NspawnExec is the [Exec] section of a systemd.nspawn(5) settings file, as
// far as an image configuration can carry it.
type NspawnExec struct {
	Boot             bool
	Parameters       []string
	Environment      []string
	WorkingDirectory string
	User             string
	KillSignal       string
}

// ParseNspawn reads the [Exec] section of a settings file. Words are split
// as systemd does for these keys (EXTRACT_UNQUOTE|EXTRACT_RETAIN_ESCAPE:
// single and double quotes group, a backslash is an ordinary character);
// a later Parameters= replaces an earlier one, an empty one resets, and
// Environment= accumulates. Other sections and keys are ignored.
func ParseNspawn(b []byte) (NspawnExec, error) {
	var ns NspawnExec
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		// A trailing backslash continues the line.
		for strings.HasSuffix(line, "\\") && sc.Scan() {
			n++
			line = strings.TrimSuffix(line, "\\") + " " + strings.TrimSpace(sc.Text())
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return ns, fmt.Errorf("line %d: malformed section header %q", n, line)
			}
			section = line[1 : len(line)-1]
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return ns, fmt.Errorf("line %d: want KEY=VALUE, got %q", n, line)
		}
		if section != "Exec" {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "Boot":
			v, err := parseBool(val)
			if err != nil {
				return ns, fmt.Errorf("line %d: Boot=: %w", n, err)
			}
			ns.Boot = v
		case "Parameters":
			words, err := oci.SplitWords(val)
			if err != nil {
				return ns, fmt.Errorf("line %d: Parameters=: %w", n, err)
			}
			ns.Parameters = words
		case "Environment":
			words, err := oci.SplitWords(val)
			if err != nil {
				return ns, fmt.Errorf("line %d: Environment=: %w", n, err)
			}
			for _, w := range words {
				if k, _, ok := strings.Cut(w, "="); !ok || k == "" {
					return ns, fmt.Errorf("line %d: Environment=: %q is no KEY=value assignment", n, w)
				}
			}
			ns.Environment = append(ns.Environment, words...)
		case "WorkingDirectory":
			ns.WorkingDirectory = val
		case "User":
			ns.User = val
		case "KillSignal":
			ns.KillSignal = val
		}
	}
	if err := sc.Err(); err != nil {
		return ns, err
	}
	return ns, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean", s)
}
