package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/pull"
)

// pullFlags are the options pull-tar and pull-raw share.
type pullFlags struct {
	verify         string
	keyrings       []string
	key            string
	keepDownload   bool
	settings       bool
	stallTimeout   time.Duration
	connectTimeout time.Duration
	retries        int
}

func (f *pullFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.verify, "verify", "signature", "no, checksum, signature, or the image's SHA-256 (64 hex digits)")
	fl.StringArrayVar(&f.keyrings, "keyring", nil, "OpenPGP keyring for --verify=signature (repeatable; default: systemd's import-pubring)")
	fl.StringVar(&f.key, "key", "", "cosign/sigstore PEM public key: SHA256SUMS.sig must verify with it")
	fl.BoolVar(&f.keepDownload, "keep-download", false, "keep the verified download in a cache in the image root (re-verified when reused)")
	fl.BoolVar(&f.settings, "settings", true, "fetch and install the .nspawn settings file next to the image")
	fl.DurationVar(&f.stallTimeout, "timeout", 60*time.Second, "abort a download that receives less than 30 bytes/s for this long")
	fl.DurationVar(&f.connectTimeout, "connect-timeout", 30*time.Second, "timeout for connecting to the server")
	fl.IntVar(&f.retries, "retries", 3, "attempts to resume or retry a failed download (0 = none)")
}

func (a *app) pullCommand(typ pull.ImageType) *cobra.Command {
	var f pullFlags
	what := "a tarball (any compression) as a directory image"
	if typ == pull.Raw {
		what = "a disk image (any compression) as NAME.raw"
	}
	cmd := &cobra.Command{
		Use:   "pull-" + string(typ) + " URL [NAME]",
		Short: "Download, verify and install " + what,
		Long: `Download URL (http, https or file) and, in one streaming pass, hash it,
decompress it (detected from the content) and write it into a hidden work
path in the image root. Only when the checksum (URL.sha256, else SHA256SUMS
next to the ORIGINAL URL) and its signature (SHA256SUMS.gpg/.asc with the
OpenPGP keyring; SHA256SUMS.sig with --key) verify is it renamed to NAME.
NAME defaults to the URL's file name without its suffixes. A settings file
NAME.nspawn next to the image is installed too; it must be listed in the
checksum file. Interrupted downloads are resumed (Range/If-Range).`,
		Args: rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			v, err := pull.ParseVerify(f.verify)
			if err != nil {
				return usageError{err}
			}
			if err := checkKeyFlags(cmd, v.Mode == pull.VerifySignature, "--verify="+f.verify); err != nil {
				return err
			}
			var name string
			if len(args) == 2 {
				name = args[1]
			} else if name, err = pull.DefaultName(typ, args[0]); err != nil {
				return usageError{err}
			}
			if err := imageroot.ValidName(name); err != nil {
				return usageError{fmt.Errorf("%w (give a NAME)", err)}
			}
			if _, err := pull.URLFileName(args[0]); err != nil {
				return usageError{err}
			}
			if v.Mode == pull.VerifyHash && !cmd.Flags().Changed("settings") {
				f.settings = false // a literal hash cannot cover a settings file
			} else if v.Mode == pull.VerifyHash && f.settings {
				return usagef("--verify=<hash> covers only the image: it cannot be combined with --settings")
			}
			opts := pull.PullOptions{
				ImportOptions: pull.ImportOptions{
					InstallOptions: a.installOptions(),
					Log:            a.log,
				},
				Verify:       v,
				Keyrings:     f.keyrings,
				NoSettings:   !f.settings,
				KeepDownload: f.keepDownload,
				HTTP: pull.HTTPOptions{
					UserAgent:      "berth/" + version,
					ConnectTimeout: f.connectTimeout,
					StallTimeout:   f.stallTimeout,
					Retries:        f.retries,
					Log:            a.log,
				},
			}
			if f.retries == 0 {
				opts.HTTP.Retries = -1
			}
			if f.key != "" {
				pem, err := os.ReadFile(f.key)
				if err != nil {
					return fmt.Errorf("--key: %w", err)
				}
				opts.CosignKey = pem
			}
			root, err := a.openRoot()
			if err != nil {
				return err
			}
			prog := a.progress(ctx)
			opts.Progress = prog
			err = pull.Pull(ctx, root, typ, args[0], name, opts)
			prog.Wait()
			return err
		},
	}
	f.register(cmd)
	return cmd
}

func (a *app) pullTarCommand() *cobra.Command { return a.pullCommand(pull.Tar) }
func (a *app) pullRawCommand() *cobra.Command { return a.pullCommand(pull.Raw) }

// checkKeyFlags refuses key flags that a verification mode would ignore:
// a user who gives --keyring or --key expects a signature check, so
// silently skipping it would be worse than an error.
func checkKeyFlags(cmd *cobra.Command, signature bool, mode string) error {
	if signature {
		return nil
	}
	for _, name := range []string{"keyring", "key"} {
		if fl := cmd.Flags().Lookup(name); fl != nil && fl.Changed {
			return usagef("--%s has no effect with %s, which checks no signature: drop one of them", name, mode)
		}
	}
	return nil
}
