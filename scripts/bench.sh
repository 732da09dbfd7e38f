#!/usr/bin/env bash
# make bench: berth against its peers (systemd-import, tar | xz, tar | zstd) on
# the same real Debian root tree, in the same run. Prints medians of N runs,
# the ratio berth/peer, and berth's peak RSS. Needs root (device nodes,
# ownership) and the packages `make deps` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH=${BERTH:-$PWD/bin/berth}
N=${N:-3}
# BENCH selects sections: import write pull build export (default: all).
BENCH=${BENCH:-import write pull build export}
want() { case " $BENCH " in *" $1 "*) return 0 ;; esac; return 1; }
CACHE=${BERTH_TEST_CACHE:-/var/cache/berth-test}
TREE=$CACHE/bookworm-minbase
W=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT

if [ ! -f "$TREE.ok" ]; then
	echo "bench: making the Debian tree with debootstrap (once)" >&2
	mkdir -p "$CACHE"; rm -rf "$TREE.new"
	debootstrap --variant=minbase --include=iputils-ping bookworm "$TREE.new" http://deb.debian.org/debian >/dev/null
	mv "$TREE.new" "$TREE"; touch "$TREE.ok"
fi

# measure NAME CMD...: runs CMD N times, records wall seconds and peak RSS (KiB).
declare -A WALL RSS
measure() {
	local name=$1; shift
	local walls=() rss=0
	for _ in $(seq "$N"); do
		# Clean up after the previous run first, then flush and drop the
		# caches, so that neither the deletion's write-back nor its kernel
		# work overlaps the run being timed.
		"${PRE[@]}"
		sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
		/usr/bin/time -f '%e %M' -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
		read -r w m < "$W/time"
		walls+=("$w"); [ "$m" -gt "$rss" ] && rss=$m
	done
	WALL[$name]=$(printf '%s\n' "${walls[@]}" | sort -n | sed -n "$(( (N + 1) / 2 ))p")
	RSS[$name]=$rss
}
noop() { :; }
PRE=(noop)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
row() { # job berth peer target; rows whose jobs did not run are left out
	[ -n "${WALL[$2]:-}" ] && [ -n "${WALL[$3]:-}" ] || return 0
	printf '%-40s %8ss %8ss %6s  %-8s %6d MiB\n' "$1" "${WALL[$2]}" "${WALL[$3]}" "$(ratio "${WALL[$2]}" "${WALL[$3]}")" "$4" $(( RSS[$2] / 1024 ))
}
header() { printf '%-40s %9s %9s %6s  %-8s %10s\n' job berth peer ratio target "berth RSS"; }

TARBYTES=$(tar -C "$TREE" --numeric-owner --xattrs --xattrs-include='*' -cf - . | wc -c)
tar -C "$TREE" --numeric-owner --xattrs --xattrs-include='*' -cf - . | xz -6 -T2 > "$W/in-T2.tar.xz"
tar -C "$TREE" --numeric-owner --xattrs --xattrs-include='*' -cf - . | gzip -6 > "$W/in.tar.gz"

# import: berth import-tar vs systemd-import tar, same file, fresh image root each run.
cleanroot() { chattr -R -i "$W/root" 2>/dev/null || true; rm -rf "$W/root"; mkdir -p "$W/root"; }
if want import; then
PRE=(cleanroot)
measure berth-import-xzT2 "$BERTH" --image-root "$W/root" --no-progress import-tar "$W/in-T2.tar.xz" img
measure sd-import-xzT2    /usr/lib/systemd/systemd-import tar --image-root="$W/root" "$W/in-T2.tar.xz" img
measure berth-import-gz   "$BERTH" --image-root "$W/root" --no-progress import-tar "$W/in.tar.gz" img
measure sd-import-gz      /usr/lib/systemd/systemd-import tar --image-root="$W/root" "$W/in.tar.gz" img
PRE=(noop)
fi

# write: berth export-tar vs tar | xz -6 -T2 and tar | zstd -3 -T2.
rmout() { rm -rf "$W"/out.*; }
XZB=0 XZP=0 ZSTB=0
if want write; then
PRE=(rmout)
measure berth-write-xz  "$BERTH" --no-progress export-tar "$TREE/" "$W/out.tar.xz"
XZB=$(stat -c %s "$W/out.tar.xz")
measure peer-write-xz   sh -c "tar -C '$TREE' --numeric-owner --xattrs --xattrs-include='*' -cf - . | xz -6 -T2 > '$W/out.peer.xz'"
XZP=$(stat -c %s "$W/out.peer.xz")
measure berth-write-zst "$BERTH" --no-progress export-tar "$TREE/" "$W/out.tar.zst"
ZSTB=$(stat -c %s "$W/out.tar.zst")
measure peer-write-zst  sh -c "tar -C '$TREE' --numeric-owner --xattrs --xattrs-include='*' -cf - . | zstd -q -3 -T2 > '$W/out.peer.zst'"
measure berth-write-gz  "$BERTH" --no-progress export-tar "$TREE/" "$W/out.tar.gz"
measure peer-write-gz   sh -c "tar -C '$TREE' --numeric-owner --xattrs --xattrs-include='*' -cf - . | gzip -6 > '$W/out.peer.gz'"
PRE=(noop)

PRE=(noop)
fi

echo
echo "tree: $TREE, tar size $(( TARBYTES / 1048576 )) MiB, N=$N runs, median wall time"
header
row "import-tar .tar.xz (xz -T2) vs systemd-import"   berth-import-xzT2 sd-import-xzT2 "<=0.5"
row "import-tar .tar.gz vs systemd-import"            berth-import-gz   sd-import-gz   "-"
row "export .tar.xz vs tar|xz -6 -T2" berth-write-xz  peer-write-xz  "<=0.6"
row "export .tar.zst vs tar|zstd -3 -T2" berth-write-zst peer-write-zst "<=1.2"
row "export .tar.gz vs tar|gzip -6" berth-write-gz    peer-write-gz  "-"
if want write; then echo "xz size: berth $(( XZB * 100 / TARBYTES ))% of tar (target <=30%), xz -6 -T2 $(( XZP * 100 / TARBYTES ))%; zstd: berth $(( ZSTB * 100 / TARBYTES ))%"; fi

# ---------------------------------------------------------------------------
# pull (issue 4): berth pull-tar vs systemd-pull tar --verify=checksum, same URL
# on a loopback HTTP server (busybox httpd), fresh image root each run.
if want pull; then
SRV=$W/srv; mkdir -p "$SRV"
cp "$W/in-T2.tar.xz" "$SRV/t2.tar.xz"; cp "$W/in.tar.gz" "$SRV/gz.tar.gz"
tar -C "$TREE" --numeric-owner --xattrs --xattrs-include='*' -cf - . | xz -T1 -3 > "$SRV/single.tar.xz"
( cd "$SRV" && sha256sum --binary ./*.tar.* | sed 's| \*\./| *|' > SHA256SUMS )
PORT=$(( 20000 + RANDOM % 20000 ))
busybox httpd -f -p "127.0.0.1:$PORT" -h "$SRV" & HTTPD=$!
trap 'kill $HTTPD 2>/dev/null; chattr -R -i "$W" 2>/dev/null; rm -rf "$W"' EXIT
sleep 0.5
U=http://127.0.0.1:$PORT
PRE=(cleanroot)
for f in single t2 gz; do
	ext=tar.xz; [ $f = gz ] && ext=tar.gz
	measure berth-pull-$f "$BERTH" --image-root "$W/root" --no-progress -q pull-tar --verify=checksum "$U/$f.$ext" img
	measure sd-pull-$f    timeout 300 /usr/lib/systemd/systemd-pull tar --verify=checksum --image-root="$W/root" "$U/$f.$ext" img
done
PRE=(noop)
kill $HTTPD 2>/dev/null || true
echo
echo "pull: $TREE served on 127.0.0.1, --verify=checksum, N=$N runs, median wall time"
header
row "pull-tar .tar.xz (1 block) vs systemd-pull" berth-pull-single sd-pull-single "<=0.7"
row "pull-tar .tar.xz (xz -T2) vs systemd-pull"  berth-pull-t2     sd-pull-t2     "<=0.5"
row "pull-tar .tar.gz vs systemd-pull"           berth-pull-gz     sd-pull-gz     "<=0.5"
fi

# ---------------------------------------------------------------------------
# build (issue 3): berth build of a ~290 MB closure (testdata/nixos#big, made
# offline from host directories) vs GNU tar over the same store paths, piped
# to zstd -3 -T2 and xz -6 -T2. Same run, median of N, peak RSS of berth.
if want build; then
BIGFLAKE="path:$PWD/testdata/nixos#nixosConfigurations.big.config.system.build.toplevel"
BIG=$(nix --extra-experimental-features 'nix-command flakes' build --json --no-link \
	--option substituters '' "$BIGFLAKE" | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
[ -n "$BIG" ] || { echo "bench: building $BIGFLAKE failed" >&2; exit 1; }
BIGPATHS=$(nix-store -qR "$BIG" | sort | sed 's|^/||' | tr '\n' ' ')
BIGTAR=$(tar --sort=name --mtime=@1 --owner=0 --group=0 --numeric-owner --hard-dereference -C / -cf - $BIGPATHS | wc -c)
PRE=(rmout)
measure berth-build-zst "$BERTH" --no-progress -q build --toplevel "$BIG" -o "$W/out.tar.zst"
BZST=$(stat -c %s "$W/out.tar.zst")
measure peer-build-zst  sh -c "tar --sort=name --mtime=@1 --owner=0 --group=0 --numeric-owner --hard-dereference -C / -cf - $BIGPATHS | zstd -q -3 -T2 > '$W/out.peer.zst'"
PZST=$(stat -c %s "$W/out.peer.zst")
measure berth-build-xz  "$BERTH" --no-progress -q build --toplevel "$BIG" -o "$W/out.tar.xz"
BXZ=$(stat -c %s "$W/out.tar.xz")
measure peer-build-xz   sh -c "tar --sort=name --mtime=@1 --owner=0 --group=0 --numeric-owner --hard-dereference -C / -cf - $BIGPATHS | xz -6 -T2 > '$W/out.peer.xz'"
PXZ=$(stat -c %s "$W/out.peer.xz")
# OCI layout (zstd layers by popularity, one pass per layer) vs the .tar.zst build.
rmoutdir() { rm -rf "$W"/out.*; }
PRE=(rmoutdir)
measure berth-build-oci "$BERTH" --no-progress -q build --toplevel "$BIG" -o "$W/out.oci"
BOCI=$(du -sb "$W/out.oci" | cut -f1)
PRE=(noop)
echo
echo "build: $BIG, closure tar $(( BIGTAR / 1048576 )) MiB, N=$N runs, median wall time"
header
row "build .tar.zst vs tar|zstd -3 -T2" berth-build-zst peer-build-zst "<=1.2"
row "build .tar.xz vs tar|xz -6 -T2"    berth-build-xz  peer-build-xz  "<=0.6"
row "build .oci vs build .tar.zst"      berth-build-oci berth-build-zst "<=1.5"
echo "build sizes: .tar.zst berth $(( BZST * 100 / BIGTAR ))% / zstd -3 $(( PZST * 100 / BIGTAR ))%; .tar.xz berth $(( BXZ * 100 / BIGTAR ))% (target <=30%) / xz -6 $(( PXZ * 100 / BIGTAR ))%; .oci $(( BOCI * 100 / BIGTAR ))%"

fi

# ---------------------------------------------------------------------------
# export (issue 5): berth export-tar vs systemd-export tar on the Debian tree,
# same file suffix, same run, median of N, peak RSS of berth. systemd-export
# 252 compresses single-threaded (xz preset 6, gzip default level).
if want export; then
SDEXPORT=/usr/lib/systemd/systemd-export
PRE=(rmout)
measure berth-export-gz "$BERTH" --no-progress -q export-tar "$TREE/" "$W/out.tar.gz"
measure sd-export-gz    "$SDEXPORT" tar "$TREE" "$W/out.sd.tar.gz"
measure berth-export-xz "$BERTH" --no-progress -q export-tar "$TREE/" "$W/out.tar.xz"
measure sd-export-xz    "$SDEXPORT" tar "$TREE" "$W/out.sd.tar.xz"
PRE=(noop)
echo
echo "export: $TREE, N=$N runs, median wall time"
header
row "export-tar .tar.gz vs systemd-export" berth-export-gz sd-export-gz "<=0.5"
row "export-tar .tar.xz vs systemd-export" berth-export-xz sd-export-xz "<=0.6"
echo "export peak RSS target: <=64 MiB"
fi
exit 0
