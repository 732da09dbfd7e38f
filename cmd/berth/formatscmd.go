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
			fmt.Fprintln(tw, "raw disk image\t.raw .raw.xz .raw.zst\tyes (import-raw, pull-raw: copied as NAME.raw)\tyes (build: GPT, one DPS-typed root partition, ext4 or squashfs; export-raw: copy)")
			fmt.Fprintln(tw, "OCI image layout\t.oci (directory)\tno\tyes (build: a layer per store path by popularity; export-oci: one layer)")
			fmt.Fprintln(tw, "OCI archive\t.oci.tar\tno\tyes (build, export-oci)")
			fmt.Fprintln(tw, "docker archive\t.docker.tar\tno\tyes (build, export-oci: for docker load)")
			fmt.Fprintln(tw, "OCI registry\t(--push REF)\tno\tyes (build --push, export-oci --push; zstd or gzip layers)")
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
