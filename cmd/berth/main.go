// Command berth builds NixOS configurations into systemd-nspawn images, pulls
// images with verification into the machine store, and exports machines back
// to images. This package is only the command line: flag parsing, wiring,
// progress and exit codes; the work is done by the build, pull, export and
// verify packages.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// memoryLimit is the Go heap soft limit of every job. berth streams, so
// what it holds is codec state and a few blocks in flight (parallel xz holds
// one 24 MiB block of an `xz -T2` file); without a limit the default GC pacing
// lets the heap grow to twice that before collecting (measured: 66-90 MiB peak
// RSS for .tar.xz export and xz -T2 pulls, 56-58 MiB with the limit, same wall
// time). A GOMEMLIMIT set by the user wins.
const memoryLimit = 48 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
