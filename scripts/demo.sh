#!/usr/bin/env bash
# berth demo on built-in defaults: everything happens under ./demo, the host's
# /var/lib/machines is not touched.
#
#  1. make a small bootable root tree (busybox-static, an init that prints a marker)
#  2. export it with berth to a parallel multi-block .tar.xz, check it with xz -t
#  3. import-tar it into a local image root (./demo/machines)
#  4. boot it with systemd-nspawn and see the marker
#  5. export the machine again (.tar.zst), re-import it, and compare both trees
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH=${BERTH:-$PWD/bin/berth}
D=$PWD/demo
rm -rf "$D"; mkdir -p "$D"
export BERTH_IMAGE_ROOT=$D/machines
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a bootable busybox root tree in $D/tree"
T=$D/tree
mkdir -p "$T"/{bin,sbin,etc,proc,sys,dev,run,tmp,var/log,usr/lib}
cp /bin/busybox "$T/bin/busybox"
for a in sh echo cat ls mount uname poweroff; do ln -s busybox "$T/bin/$a"; done
cat > "$T/etc/os-release" <<'OS'
NAME="berth demo"
ID=berth-demo
PRETTY_NAME="berth demo (busybox)"
OS
cat > "$T/sbin/init" <<'INIT'
#!/bin/sh
echo "berth-demo: booted $(uname -s) as PID $$"
INIT
chmod 755 "$T/sbin/init"; chmod 1777 "$T/tmp"
echo "demo" > "$T/etc/hostname"; ln "$T/etc/hostname" "$T/etc/hostname.hardlink"

step "2. berth export-tar (parallel multi-block xz)"
"$BERTH" export-tar "$T" "$D/demo.tar.xz"
ls -l "$D/demo.tar.xz"
xz -t "$D/demo.tar.xz" && echo "xz -t: ok"

step "3. berth import-tar into $BERTH_IMAGE_ROOT"
"$BERTH" import-tar "$D/demo.tar.xz"
ls -la "$BERTH_IMAGE_ROOT"

step "4. boot it with systemd-nspawn"
systemd-nspawn --register=no --keep-unit -q -D "$BERTH_IMAGE_ROOT/demo" -b 2>&1 | tee "$D/boot.log"
grep -q 'berth-demo: booted' "$D/boot.log" && echo "marker seen: the imported machine booted"

step "5. export the machine (zstd), re-import as demo2, compare"
"$BERTH" export-tar demo "$D/demo2.tar.zst"
"$BERTH" import-tar "$D/demo2.tar.zst" demo2
( cd "$BERTH_IMAGE_ROOT/demo" && find . -printf '%p %y %m %U:%G %l %n\n' | sort ) > "$D/a.lst"
( cd "$BERTH_IMAGE_ROOT/demo2" && find . -printf '%p %y %m %U:%G %l %n\n' | sort ) > "$D/b.lst"
diff -u "$D/a.lst" "$D/b.lst" && echo "round trip: identical ($(wc -l < "$D/a.lst") entries)"
