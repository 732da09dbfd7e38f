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
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
