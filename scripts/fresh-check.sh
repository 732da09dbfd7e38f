#!/usr/bin/env bash
# make fresh-check: run the README's two commands, `make demo` and
# `make test` (with CI=true, so a skipped test fails), as root in a clone of
# this repository on a fresh Debian 12 machine, here: a Debian 12 root made
# with debootstrap (the default variant: what a fresh installation has),
# entered with pivot_root in new mount and PID namespaces, so that
# systemd-nspawn finds / to be a mount point and user namespaces work.
# Nothing of the host is used but its kernel, Go (/usr/local/go, read-only),
# its CA certificates and resolver; the host's /var/lib/machines, /nix and
# Debian packages stay untouched.
#
#   FRESH_ROOT=DIR      where the fresh root goes (default /var/tmp/berth-fresh; emptied first)
#   FRESH_BASE=FILE     reuse a tarball of the pristine debootstrap root; it is
#                       made on the first run when the file does not exist yet
#                       (default: none, a truly fresh debootstrap every time)
#   DEBIAN_MIRROR=URL   the mirror for debootstrap (default http://deb.debian.org/debian)
#   FRESH_STEPS="demo test"  which of the two commands to run
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${FRESH_ROOT:-/var/tmp/berth-fresh}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STEPS=${FRESH_STEPS:-demo test}
LOG=${ROOT}.log

[ "$(id -u)" = 0 ] || { echo "fresh-check needs root (debootstrap, mounts, namespaces)" >&2; exit 1; }
for t in debootstrap unshare git; do
	command -v "$t" >/dev/null || { echo "fresh-check needs $t on the host" >&2; exit 1; }
done
[ -x /usr/local/go/bin/go ] || { echo "fresh-check needs Go in /usr/local/go" >&2; exit 1; }
case "$ROOT" in /|/usr|/var|/tmp|"") echo "FRESH_ROOT=$ROOT is not a scratch directory" >&2; exit 1;; esac

say() { printf '\n\033[1m== fresh-check: %s\033[0m\n' "$*"; }
t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t0 ))s"; }

# Mounts of an interrupted earlier run live only in its namespace, which
# ended with it; the tree itself may still be there.
say "1. a fresh Debian 12 root in $ROOT"
rm -rf --one-file-system "$ROOT"
mkdir -p "$ROOT"
if [ -n "${FRESH_BASE:-}" ] && [ -f "$FRESH_BASE" ]; then
	tar -C "$ROOT" -xpf "$FRESH_BASE"
	echo "unpacked the pristine root from $FRESH_BASE"
else
	debootstrap --arch=amd64 bookworm "$ROOT" "$MIRROR" > "$LOG" 2>&1 || { tail -20 "$LOG"; exit 1; }
	if [ -n "${FRESH_BASE:-}" ]; then
		tar -C "$ROOT" -cpf "$FRESH_BASE" .
		echo "saved the pristine root as $FRESH_BASE"
	fi
fi
t_root=$(elapsed)

say "2. a clone of $(git -C "$REPO" rev-parse --short HEAD), Go, CA certificates, resolver"
git clone -q "$REPO" "$ROOT/root/berth"
mkdir -p "$ROOT/usr/local/go"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's CA bundle (a proxy's CA may be in it): kept apart, because
# installing ca-certificates in the root rewrites /etc/ssl/certs.
cp -L "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/host-ca-certificates.crt"
# What a user types on the fresh machine: the prerequisites the README
# names, then the two commands. Everything else is make's business.
cat > "$ROOT/root/fresh-run.sh" <<'INNER'
#!/bin/bash
set -uo pipefail
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root DEBIAN_FRONTEND=noninteractive
cd /root/berth
apt-get update -qq && apt-get install -y -qq git make > /tmp/prereq.log 2>&1 || { tail /tmp/prereq.log; exit 1; }
rc=0
for step in $STEPS; do
	start=$(date +%s)
	case $step in
	demo) make demo > /root/demo.log 2>&1; r=$?;;
	test) CI=true make test > /root/test.log 2>&1; r=$?;;
	esac
	echo "fresh-check: make $step: exit $r in $(( $(date +%s) - start ))s"
	[ $r = 0 ] || rc=1
done
exit $rc
INNER
chmod 755 "$ROOT/root/fresh-run.sh"

say "3. make $STEPS (CI=true for test) inside it (pivot_root, new mount and PID namespaces)"
set +e
STEPS="$STEPS" GOPROXY="${GOPROXY:-}" unshare --mount --pid --fork --propagation private /bin/bash -ec '
R='"$ROOT"'
mount --bind "$R" "$R"                      # / must be a mount point for nspawn
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"; mount --make-rslave "$R/sys"
mount --rbind /dev "$R/dev"; mount --make-rslave "$R/dev"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount --bind /usr/local/go "$R/usr/local/go"
mount -o remount,bind,ro "$R/usr/local/go"
cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
cd /
exec env -i STEPS="$STEPS" ${GOPROXY:+GOPROXY=$GOPROXY} SSL_CERT_FILE=/etc/host-ca-certificates.crt TERM=dumb /root/fresh-run.sh
'
rc=$?
set -e

say "summary ($(elapsed) in all; fresh root ready after $t_root)"
for f in demo test; do
	[ -f "$ROOT/root/$f.log" ] || continue
	echo "--- last lines of make $f ($ROOT/root/$f.log)"
	tail -n 6 "$ROOT/root/$f.log"
done
if [ $rc = 0 ]; then
	echo "fresh-check: PASSED: make $(echo $STEPS | sed "s/ / and make /") on a fresh Debian 12 root"
else
	echo "fresh-check: FAILED (logs in $ROOT/root)"
fi
exit $rc
