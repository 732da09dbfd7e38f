package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/internal/progress"
	"github.com/berth-dev/berth/internal/sdbool"
)

// Exit codes of the command-line contract.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

// usageError marks errors in how berth was called (exit status 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// app holds what every verb shares: global options, streams, the logger.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	imageRoot  string
	force      bool
	readOnly   bool
	quiet      bool
	noProgress bool
	logLevel   string
	logFormat  string
	noSync     bool // --sync=no

	log *slog.Logger
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	msg := err.Error()
	if errors.Is(err, context.Canceled) {
		msg = "interrupted: " + msg
	}
	fmt.Fprintf(stderr, "berth: %s\n", strings.ReplaceAll(msg, "\n", " "))
	var u usageError
	if errors.As(err, &u) || strings.HasPrefix(msg, "unknown command") {
		fmt.Fprintf(stderr, "Run 'berth --help' for usage.\n")
		return exitUsage
	}
	return exitFailure
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "berth",
		Short:         "Build, pull, verify and export systemd-nspawn machine images",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setup()
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	defRoot := imageroot.Default
	if env := os.Getenv("BERTH_IMAGE_ROOT"); env != "" {
		defRoot = env
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.imageRoot, "image-root", defRoot, "image root directory (env BERTH_IMAGE_ROOT)")
	pf.BoolVar(&a.force, "force", false, "replace an existing image or output file")
	pf.BoolVar(&a.readOnly, "read-only", false, "mark installed images immutable")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "print only errors")
	pf.BoolVar(&a.noProgress, "no-progress", false, "do not draw progress bars")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&a.logFormat, "log-format", "text", "log format: text or json")
	pf.Var(&negBool{&a.noSync}, "sync", "make images and output files durable (synced) before they appear: yes or no")
	pf.Lookup("sync").NoOptDefVal = "yes"

	root.AddCommand(a.importTarCommand(), a.exportTarCommand(), a.exportRawCommand(), a.exportOCICommand(), a.formatsCommand(),
		a.pullTarCommand(), a.pullRawCommand(), a.importRawCommand(), a.importFSCommand(), a.listImagesCommand(), a.removeCommand(), a.cleanCommand(), a.buildCommand(),
		a.sumsCommand(), a.signCommand(), a.verifyCommand(), a.publishCommand(), a.pullOCICommand())
	return root
}

// setup validates global flags and builds the logger.
func (a *app) setup() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", a.logLevel)
	}
	if a.quiet {
		lvl = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch a.logFormat {
	case "text":
		a.log = slog.New(slog.NewTextHandler(a.stderr, opts))
	case "json":
		a.log = slog.New(slog.NewJSONHandler(a.stderr, opts))
	default:
		return usagef("--log-format %q: want text or json", a.logFormat)
	}
	return nil
}

// progress returns the progress display for this invocation: bars on a
// terminal stderr unless --quiet, --no-progress or JSON logs are asked for.
func (a *app) progress(ctx context.Context) *progress.Progress {
	f, _ := a.stderr.(*os.File)
	return progress.New(ctx, !a.quiet && !a.noProgress && a.logFormat == "text", f)
}

// exactArgs and rangeArgs are cobra argument checks that report usage errors.
func rangeArgs(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || len(args) > max {
			if min == max {
				return usagef("%s takes %d argument(s), got %d", cmd.Name(), min, len(args))
			}
			return usagef("%s takes %d to %d arguments, got %d", cmd.Name(), min, max, len(args))
		}
		return nil
	}
}

func (a *app) openRoot() (*imageroot.Root, error) {
	return imageroot.Open(a.imageRoot, a.log)
}

// installOptions are how every verb installs into the image root.
func (a *app) installOptions() imageroot.InstallOptions {
	return imageroot.InstallOptions{Force: a.force, ReadOnly: a.readOnly, NoSync: a.noSync}
}

// outputOptions are how every verb writes an output file.
func (a *app) outputOptions() atomicfile.Options {
	return atomicfile.Options{Replace: a.force, NoSync: a.noSync, Log: a.log}
}

// negBool is a flag whose systemd boolean sets *neg to its negation:
// --sync=no sets noSync.
type negBool struct{ neg *bool }

func (b *negBool) String() string {
	if b.neg != nil && *b.neg {
		return "no"
	}
	return "yes"
}

func (b *negBool) Set(s string) error {
	v, err := sdbool.Parse(s)
	if err != nil {
		return err
	}
	*b.neg = !v
	return nil
}

func (b *negBool) Type() string { return "bool" }
