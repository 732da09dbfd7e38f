package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func (a *app) formatsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "formats",
		Short: "List the image formats and compressions berth reads and writes",
		Args:  rangeArgs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FORMAT\tSUFFIXES\tREAD (import)\tWRITE (export)")
			fmt.Fprintln(tw, "tar\t.tar\tyes (PAX, GNU, ustar; concatenated archives)\tyes (PAX, numeric owners, xattrs)")
			fmt.Fprintln(tw)
			fmt.Fprintln(tw, "COMPRESSION\tSUFFIX\tREAD (detected by magic bytes)\tWRITE (chosen by suffix or --format)")
			fmt.Fprintln(tw, "uncompressed\t\tyes\tyes")
			fmt.Fprintln(tw, "xz\t.xz .txz\tyes (multi-stream; multi-block decoded in parallel)\tyes (parallel, multi-block)")
			fmt.Fprintln(tw, "zstd\t.zst\tyes (multi-frame)\tyes")
			fmt.Fprintln(tw, "gzip\t.gz .tgz\tyes (multi-member)\tyes")
			fmt.Fprintln(tw, "bzip2\t.bz2\tyes (multi-stream)\tno")
			return tw.Flush()
		},
	}
}
