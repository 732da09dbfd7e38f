package main

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/build"
	"github.com/berth-dev/berth/formats/oci"
	"github.com/berth-dev/berth/formats/raw"
	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/imageroot"
	"github.com/berth-dev/berth/publish"
	"github.com/berth-dev/berth/verify"
)

func (a *app) publishCommand() *cobra.Command {
	var (
		in        build.Input
		out       string
		formats   []string
		imageName string
		level     int
		adds      []string
		settings  string
		fs        string
		sqfsComp  string
		layerComp string
		maxLayers int
		push      string
		gpgKey    string
		cosignKey string
	)
	cmd := &cobra.Command{
		Use:   "publish (--flake REF#NAME | --config FILE | --toplevel STOREPATH) --format FMT... --out DIR",
		Short: "Build a release set: images, SHA256SUMS, signatures, release.json",
		Long: `Build the NixOS system once and write a release set into DIR:
  NAME.<format>        one image per --format (tar, tar.xz, tar.zst, tar.gz,
                       raw, raw.xz, raw.zst, oci.tar, docker.tar)
  NAME.nspawn          with --settings FILE
  release.json         image name, system path, and per file its format,
                       size and sha256
  SHA256SUMS           every file above, as systemd-pull reads it
  SHA256SUMS.gpg       with --gpg-key (passphrase in BERTH_GPG_PASSPHRASE)
  SHA256SUMS.sig       with --key (cosign sign-blob form; COSIGN_PASSWORD)
Users pull it with: berth pull-tar --verify=signature --keyring KEY.gpg
URL/NAME.tar.xz (or machinectl pull-tar / systemd-pull with the key in
/etc/systemd/import-pubring.gpg).

--push REF also pushes the OCI image, and with --key its cosign signature
(tag sha256-<digest>.sig, simple-signing payload), which cosign verify --key
and berth pull-oci --verify=signature --key check.

The set is written next to DIR and moved into place only when complete
(DIR must be missing or empty, or --force). The same inputs give the same
bytes: OpenPGP signatures are dated SOURCE_DATE_EPOCH when set.`,
		Args: rangeArgs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := in.Validate(); err != nil {
				return usageError{err}
			}
			if out == "" {
				return usagef("publish needs --out DIR")
			}
			if len(formats) == 0 {
				return usagef("publish needs at least one --format: %s", buildFormatNames())
			}
			var outs []buildOutput
			hasRaw, hasOCI := false, push != ""
			for _, f := range formats {
				o, err := buildOutputFor("", f)
				if err != nil {
					return err
				}
				if o.format == "oci" {
					return usagef("--format oci is a directory and cannot be checksummed: use oci.tar")
				}
				if slices.ContainsFunc(outs, func(p buildOutput) bool { return p.format == o.format }) {
					return usagef("--format %s is given twice", o.format)
				}
				hasRaw = hasRaw || o.class == classRaw
				hasOCI = hasOCI || o.class == classOCI
				outs = append(outs, o)
			}
			flags := cmd.Flags()
			if !hasRaw {
				for _, f := range []string{"fs", "squashfs-compression"} {
					if flags.Changed(f) {
						return usagef("--%s applies to raw disk images, and no raw --format is given", f)
					}
				}
			}
			switch fs {
			case raw.FSExt4, raw.FSSquashfs:
			default:
				return usagef("--fs %q: want ext4 or squashfs", fs)
			}
			if !flags.Changed("layer-compression") && push == "" && slices.ContainsFunc(outs, func(o buildOutput) bool { return o.format == "docker.tar" }) &&
				!slices.ContainsFunc(outs, func(o buildOutput) bool { return o.format == "oci.tar" }) {
				layerComp = string(oci.Gzip) // docker load reads gzip layers as they are
			}
			comp, err := parseOCIFlags(maxLayers, layerComp, push)
			if err != nil {
				return err
			}
			if imageName == "" {
				if imageName = publish.DefaultName(in.Flake, in.Config, in.Toplevel); imageName == "" {
					return usagef("cannot derive an image name from the input: pass --name NAME")
				}
			}
			if err := imageroot.ValidName(imageName); err != nil {
				return usageError{fmt.Errorf("--name: %w", err)}
			}
			plan, err := a.buildPlan(adds)
			if err != nil {
				return err
			}
			var settingsData []byte
			if settings != "" {
				if settingsData, err = readSmall(settings, 1<<20); err != nil {
					return fmt.Errorf("--settings: %w", err)
				}
			}
			// Every key is loaded before the build: a wrong passphrase
			// fails in a second, not after the images are written.
			signers, err := loadPublishKeys(gpgKey, cosignKey)
			if err != nil {
				return err
			}
			if push != "" && signers.Cosign == nil {
				a.log.Warn("pushing an unsigned OCI image: pass --key to sign it")
			}

			set, err := publish.Create(out, a.force, a.noSync)
			if err != nil {
				return err
			}
			defer set.Abort()

			top, err := build.Realise(ctx, in, a.log)
			if err != nil {
				return err
			}
			a.log.Info("reading the closure", "toplevel", top)
			sys, err := build.Load(ctx, top, a.log)
			if err != nil {
				return err
			}
			rel := &publish.Release{Name: imageName, System: top}
			j := &buildJob{a: a, sys: sys, plan: plan, level: level,
				raw: build.RawOptions{Plan: plan, FS: fs, SquashfsCompression: sqfsComp, WorkDir: set.Path(""), Log: a.log}}
			if hasOCI {
				release, err := a.buildOCIImage(ctx, j, comp, maxLayers, set.Path(""))
				if err != nil {
					return err
				}
				defer release()
			}
			for _, o := range outs {
				file := imageName + "." + o.format
				if err := a.publishOne(ctx, j, o, set.Path(file)); err != nil {
					return err
				}
				rel.Files = append(rel.Files, publish.File{Format: o.format, File: file})
			}
			if settingsData != nil {
				file := imageName + ".nspawn"
				if err := os.WriteFile(set.Path(file), settingsData, 0o644); err != nil {
					return fmt.Errorf("writing %s: %w", file, err)
				}
				rel.Files = append(rel.Files, publish.File{Format: "nspawn", File: file})
			}
			if push != "" {
				p, err := a.publishPush(ctx, j.oci, push, signers.Cosign)
				if err != nil {
					return err
				}
				rel.OCI = p
			}
			prog := a.progress(ctx)
			_, err = set.Seal(ctx, rel, signers, func(name string, size int64, r io.Reader) io.Reader {
				return prog.Bar("sha256 "+name, size).Reader(r)
			})
			prog.Wait()
			if err != nil {
				return err
			}
			if err := set.Commit(); err != nil {
				return err
			}
			if !a.quiet {
				for _, f := range rel.Files {
					fmt.Fprintf(a.stdout, "%s  %s  %d\n", f.SHA256, f.File, f.Size)
				}
				fmt.Fprintf(a.stdout, "published %s (%d images) in %s\n", imageName, len(outs), out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in.Flake, "flake", "", "build nixosConfigurations.NAME of the flake REF (REF#NAME)")
	f.StringVar(&in.Config, "config", "", "build a configuration.nix through <nixpkgs/nixos>")
	f.StringVar(&in.Toplevel, "toplevel", "", "pack a system already built (store path or ./result)")
	f.StringArrayVar(&in.NixOptions, "nix-option", nil, "pass NAME=VALUE to Nix as --option NAME VALUE (repeatable)")
	f.StringVar(&out, "out", "", "release directory (must be missing or empty, or --force)")
	f.StringArrayVar(&formats, "format", nil, "image format (repeatable): "+buildFormatNames())
	f.StringVar(&imageName, "name", "", "image name: files are NAME.<format> (default: the flake attribute, config or system name)")
	f.IntVar(&level, "level", 0, "compression level of tarballs and compressed raw images (0 = default)")
	f.StringArrayVar(&adds, "add", nil, "add a host file or directory to the tree as SRC:DEST (repeatable)")
	f.StringVar(&settings, "settings", "", "a .nspawn settings file published as NAME.nspawn")
	f.StringVar(&fs, "fs", raw.FSExt4, "raw image root file system: ext4 or squashfs")
	f.StringVar(&sqfsComp, "squashfs-compression", build.DefaultSquashfsCompression, "squashfs compressor: lz4, zstd, xz, gzip or lzo")
	f.StringVar(&layerComp, "layer-compression", string(oci.Zstd), "OCI layer compression: zstd, gzip or none")
	f.IntVar(&maxLayers, "max-layers", build.DefaultMaxLayers, "OCI layer budget, generated layer included (at least 2)")
	f.StringVar(&push, "push", "", "also push the OCI image to REF (signed with --key)")
	f.StringVar(&gpgKey, "gpg-key", "", "OpenPGP secret key: writes SHA256SUMS.gpg (passphrase in $BERTH_GPG_PASSPHRASE)")
	f.StringVar(&cosignKey, "key", "", "PEM or cosign private key: writes SHA256SUMS.sig and signs a pushed image ($COSIGN_PASSWORD)")
	return cmd
}

// loadPublishKeys reads and checks the signing keys. The OpenPGP key is
// tried once on a probe so a wrong passphrase fails before the build.
func loadPublishKeys(gpgKey, cosignKey string) (publish.Signers, error) {
	var s publish.Signers
	var err error
	if s.At, err = sourceDateEpoch(); err != nil {
		return s, err
	}
	if s.At.IsZero() {
		// No SOURCE_DATE_EPOCH: date the signature at the key's creation
		// (SignOpenPGPAt raises earlier times to it), never "now", so the
		// set stays reproducible.
		s.At = time.Unix(1, 0).UTC()
	}
	if gpgKey != "" {
		if s.PGPKey, err = readSmall(gpgKey, 1<<20); err != nil {
			return s, fmt.Errorf("--gpg-key: %w", err)
		}
		s.PGPPassphrase = []byte(os.Getenv(envGPGPassphrase))
		if err := verify.SignOpenPGPAt(io.Discard, bytes.NewReader(s.PGPKey), s.PGPPassphrase, bytes.NewReader(nil), s.At); err != nil {
			return s, fmt.Errorf("--gpg-key %s: %w", gpgKey, err)
		}
	}
	if cosignKey != "" {
		pemBytes, err := readSmall(cosignKey, 1<<20)
		if err != nil {
			return s, fmt.Errorf("--key: %w", err)
		}
		pw, _ := os.LookupEnv(envCosignPassword)
		var k crypto.Signer
		if k, err = verify.LoadPrivateKey(pemBytes, []byte(pw)); err != nil {
			return s, fmt.Errorf("--key %s: %w", cosignKey, err)
		}
		s.Cosign = k
	}
	return s, nil
}

// publishOne writes one image of the set with the writer "berth build"
// uses for the format.
func (a *app) publishOne(ctx context.Context, j *buildJob, o buildOutput, path string) error {
	// The set's Commit syncs the whole set at once.
	file, err := atomicfile.Create(path, atomicfile.Options{NoSync: true, Log: a.log})
	if err != nil {
		return err
	}
	defer file.Abort()
	j.out, j.output, j.file = o, path, file
	a.log.Info("writing", "output", path, "format", o.format)
	err = o.write(ctx, j, file)
	if j.prog != nil {
		j.prog.Wait()
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return file.Commit()
}

// publishPush pushes the OCI image and, with a key, its cosign signature.
func (a *app) publishPush(ctx context.Context, img *build.OCIImage, ref string, key crypto.Signer) (*publish.Pushed, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	prog := a.progress(ctx)
	a.log.Info("pushing", "ref", ref, "digest", d.String())
	err = oci.Push(ctx, ref, img, oci.WithProgress(prog))
	prog.Wait()
	if err != nil {
		return nil, err
	}
	p := &publish.Pushed{Ref: ref, Digest: d.String()}
	if key != nil {
		if p.Signature, err = publish.PushSignature(ctx, key, ref, d.String()); err != nil {
			return nil, err
		}
		a.log.Info("pushed the signature", "ref", p.Signature)
	}
	return p, nil
}
