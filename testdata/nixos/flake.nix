# Tiny NixOS-like systems for berth's tests. The flake has no inputs and needs
# no nixpkgs: every derivation runs /bin/sh with absolute host tool paths, so
# it builds offline with Debian's Nix 2.8 (pass --option substituters '').
#
#   nixosConfigurations.test    a bootable system: init (busybox sh from the
#                               store) prints "berth-test-system booted";
#                               closure: toplevel -> {lib-a, lib-b, hardlinks,
#                               etc} -> busybox (a diamond), files that are
#                               hard links inside one path, and identical files
#                               across paths (so `nix-store --optimise` links
#                               them).
#   nixosConfigurations.noinit  a toplevel without init (not a NixOS system).
#   nixosConfigurations.broken  a toplevel whose build fails.
#   nixosConfigurations.big     test plus copies of host directories under
#                               /usr/lib (~290 MB on Debian 12; benchmarks
#                               only, not built by make test).
{
  description = "berth test systems";

  outputs = { self }:
    let
      system = "x86_64-linux";
      drv = name: script: derivation {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-ec" script ];
      };

      busybox = drv "busybox-static" ''
        /bin/mkdir -p $out/bin
        /bin/cp /bin/busybox $out/bin/busybox
        /bin/ln -s busybox $out/bin/sh
      '';

      # lib-a and lib-b both need busybox and both carry an identical file.
      lib = n: drv "lib-${n}" ''
        /bin/mkdir -p $out/lib $out/share/doc
        echo '#!${busybox}/bin/sh' > $out/lib/run-${n}
        echo 'echo lib-${n}' >> $out/lib/run-${n}
        /bin/chmod 0755 $out/lib/run-${n}
        echo 'identical content in lib-a and lib-b' > $out/share/doc/COMMON
        echo 'identical content in lib-a and lib-b' > $out/share/doc/COMMON-copy
        /bin/ln -s ../lib/run-${n} $out/share/doc/link-${n}
      '';
      libA = lib "a";
      libB = lib "b";

      # Hard links made by the builder itself.
      hardlinks = drv "hardlinks" ''
        /bin/mkdir -p $out/data $out/empty-dir
        echo 'linked file, three names' > $out/data/one
        /bin/ln $out/data/one $out/data/two
        /bin/ln $out/data/one $out/three
        : > $out/data/empty
        echo 'refers to ${busybox}' > $out/data/ref
      '';

      etc = drv "etc" ''
        /bin/mkdir -p $out/etc
        printf 'NAME=NixOS\nID=nixos\nVERSION_ID="00.00"\nPRETTY_NAME="berth test system"\n' > $out/etc/os-release-file
        /bin/ln -s $out/etc/os-release-file $out/etc/os-release
      '';

      toplevelWith = name: extra: drv name (''
        /bin/mkdir -p $out
        echo '#!${busybox}/bin/sh' > $out/init
        echo 'echo "berth-test-system booted (${libA} ${libB} ${hardlinks})"' >> $out/init
        echo 'exit 0' >> $out/init
        /bin/chmod 0555 $out/init
        /bin/ln -s ${etc}/etc $out/etc
        printf x86_64-linux > $out/system
      '' + extra);

      test = toplevelWith "nixos-system-berth-test" "";

      noinit = drv "not-a-nixos-system" ''
        /bin/mkdir -p $out/bin
        /bin/ln -s ${busybox}/bin/busybox $out/bin/busybox
      '';

      broken = drv "broken-system" ''
        echo 'berth-test: this build fails on purpose' >&2
        exit 3
      '';

      usrlib = drv "host-usr-lib" ''
        /bin/mkdir -p $out
        for d in /usr/lib/gcc /usr/lib/python3 /usr/lib/python3.11 /usr/lib/git-core /usr/lib/postgresql /usr/lib/systemd; do
          if [ -d $d ]; then /bin/cp -r --no-preserve=all $d $out/; fi
        done
      '';

      big = toplevelWith "nixos-system-berth-big" ''
        echo '${usrlib}' > $out/usrlib
      '';

      nixos = top: { config.system.build.toplevel = top; };
    in
    {
      nixosConfigurations = {
        test = nixos test;
        noinit = nixos noinit;
        broken = nixos broken;
        big = nixos big;
      };
      packages.${system} = { inherit busybox libA libB hardlinks etc test usrlib; };
    };
}
