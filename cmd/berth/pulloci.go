package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/pull"
)

func (a *app) pullOCICommand() *cobra.Command {
	var (
		verifyMode string
		key        string
		platform   string
		insecure   bool
		settings   bool
	)
	cmd := &cobra.Command{
		Use:   "pull-oci REF [NAME]",
		Short: "Pull, verify and install a container image from a registry as a directory image",
		Long: `Fetch the image REF (registry:5000/repo:tag, repo@sha256:..., or a docker.io
short name such as debian) and install its flattened file system as NAME
(default: the last component of the repository). The tag is resolved once;
from a multi-platform index the image for --platform (default linux and this
machine's architecture) is fetched by digest. With --verify=signature (the
default) a cosign signature for that digest (tag sha256-<hex>.sig in the same
repository) must verify with --key before any layer is downloaded. Layers are
applied into a hidden work directory and checked against their digests; only
then is the tree renamed to NAME. The image config becomes NAME.nspawn.
Credentials come from the docker/podman config files. Registries on
localhost or a loopback address are spoken to over plain HTTP; --insecure
allows it for any registry.`,
		Args: rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			mode, err := pull.ParseOCIVerify(verifyMode)
			if err != nil {
				return usageError{err}
			}
			if err := checkKeyFlags(cmd, mode == pull.OCIVerifySignature, "--verify="+verifyMode); err != nil {
				return err
			}
			if mode == pull.OCIVerifySignature && key == "" {
				return usagef("pull-oci verifies a cosign signature by default: pass --key FILE with the signer's public key, or --verify=no")
			}
			if _, err := oci.ParseReference(args[0], oci.WithInsecure()); err != nil {
				return usageError{err}
			}
			var name string
			if len(args) == 2 {
				name = args[1]
			} else if name, err = pull.DefaultOCIName(args[0]); err != nil {
				return usageError{fmt.Errorf("%w (give a NAME)", err)}
			}
			if err := imageroot.ValidName(name); err != nil {
				return usageError{err}
			}
			opts := pull.OCIOptions{
				ImportOptions: pull.ImportOptions{
					InstallOptions: a.installOptions(),
					Log:            a.log,
				},
				Verify:     mode,
				Insecure:   insecure,
				NoSettings: !settings,
			}
			if platform != "" {
				if opts.Platform, err = pull.ParsePlatform(platform); err != nil {
					return usageError{fmt.Errorf("--platform: %w", err)}
				}
			}
			if key != "" {
				if opts.CosignKey, err = os.ReadFile(key); err != nil {
					return fmt.Errorf("--key: %w", err)
				}
			}
			root, err := a.openRoot()
			if err != nil {
				return err
			}
			prog := a.progress(ctx)
			opts.Progress = prog
			err = pull.PullOCI(ctx, root, args[0], name, opts)
			prog.Wait()
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&verifyMode, "verify", "signature", "signature (a cosign signature must verify with --key) or no")
	fl.StringVar(&key, "key", "", "cosign/sigstore PEM public key the image signature must verify with")
	fl.StringVar(&platform, "platform", "", "OS/ARCH[/VARIANT] to pick from a multi-platform image (default linux/"+defaultArch()+")")
	fl.BoolVar(&insecure, "insecure", false, "allow plain HTTP to any registry (loopback registries always may)")
	fl.BoolVar(&settings, "settings", true, "write NAME.nspawn from the image config (an existing one is kept unless --force)")
	return cmd
}

func defaultArch() string { return pull.DefaultPlatform().Architecture }
