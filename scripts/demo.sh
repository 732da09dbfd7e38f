#!/usr/bin/env bash
# berth demo, the full story on built-in defaults. Everything happens under
# ./demo; the host's /var/lib/machines and keyrings are not touched.
#
#  1. throwaway signing keys: OpenPGP (./demo/gnupg) and a cosign-style PEM key
#  2. berth publish: build the example NixOS system of testdata/nixos once and
#     write a signed release set into ./demo/release
#  3. check the set with the standard tools (gpg --verify, openssl) and berth verify
#  4. serve ./demo/release on 127.0.0.1 (busybox httpd, stopped on exit)
#  5. berth pull-tar --verify=signature into a local image root (./demo/machines),
#     and see a tampered download refused
#  6. boot the pulled machine with systemd-nspawn and see its marker
#  7. export it back with berth export-tar, re-import it, compare the trees
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH=${BERTH:-$PWD/bin/berth}
D=$PWD/demo
rm -rf "$D"; mkdir -p "$D"
export BERTH_IMAGE_ROOT=$D/machines
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
MARKER="berth-test-system booted"

step "1. throwaway signing keys in $D"
export GNUPGHOME=$D/gnupg
mkdir -m 700 "$GNUPGHOME"
trap 'gpgconf --kill all >/dev/null 2>&1 || true' EXIT
export BERTH_GPG_PASSPHRASE=demo-passphrase
gpg --batch -q --pinentry-mode loopback --passphrase "$BERTH_GPG_PASSPHRASE" \
	--quick-gen-key 'berth demo release <demo@example.invalid>' ed25519 sign never
gpg --batch -q --pinentry-mode loopback --passphrase "$BERTH_GPG_PASSPHRASE" \
	--armor --export-secret-keys > "$D/release.key"
gpg --batch -q --export > "$D/pubring.gpg"
openssl ecparam -name prime256v1 -genkey -noout -out "$D/cosign.key"
openssl pkey -in "$D/cosign.key" -pubout -out "$D/cosign.pub"
ls -l "$D/release.key" "$D/pubring.gpg" "$D/cosign.key" "$D/cosign.pub"

step "2. berth publish (build once, every format, sums, signatures)"
printf '[Exec]\nEnvironment=RELEASED_BY=berth\n' > "$D/test.nspawn"
export SOURCE_DATE_EPOCH=1700000000   # reproducible OpenPGP signature
"$BERTH" publish --flake "path:$PWD/testdata/nixos#test" --nix-option substituters= \
	--format tar.xz --format tar.zst --format raw.zst --format oci.tar \
	--settings "$D/test.nspawn" --gpg-key "$D/release.key" --key "$D/cosign.key" \
	--out "$D/release"
ls -l "$D/release"
cat "$D/release/SHA256SUMS"

step "3. the set checks out with gpg, openssl and berth verify"
gpg --batch --verify "$D/release/SHA256SUMS.gpg" "$D/release/SHA256SUMS" 2>&1 | grep -i 'good signature'
base64 -d "$D/release/SHA256SUMS.sig" > "$D/sig.der"
openssl dgst -sha256 -verify "$D/cosign.pub" -signature "$D/sig.der" "$D/release/SHA256SUMS"
"$BERTH" verify --sums "$D/release/SHA256SUMS" --keyring "$D/pubring.gpg"

step "4. serve $D/release on 127.0.0.1"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	gpgconf --kill all >/dev/null 2>&1 || true
}
trap cleanup EXIT
serve() { # serve DIR: starts busybox httpd on a free port, sets PORT
	local dir=$1
	for PORT in $(seq 18931 18999); do
		busybox httpd -f -p "127.0.0.1:$PORT" -h "$dir" 2>>"$D/httpd.log" &
		local pid=$!
		sleep 0.3
		if kill -0 "$pid" 2>/dev/null; then PIDS+=("$pid"); return 0; fi
	done
	echo "no free port for busybox httpd" >&2; return 1
}
serve "$D/release"
URL=http://127.0.0.1:$PORT
echo "serving $URL"

step "5. berth pull-tar --verify=signature into $BERTH_IMAGE_ROOT"
"$BERTH" pull-tar --verify=signature --keyring "$D/pubring.gpg" "$URL/test.tar.xz"
ls -la "$BERTH_IMAGE_ROOT"
cp -a "$D/release" "$D/tampered"
printf '[Exec]\nPrivileged=yes\n' > "$D/tampered/test.nspawn"
serve "$D/tampered"
if "$BERTH" pull-tar --verify=signature --keyring "$D/pubring.gpg" "http://127.0.0.1:$PORT/test.tar.xz" evil 2> "$D/tampered.log"; then
	echo "a tampered release set was accepted" >&2; exit 1
fi
echo "tampered set refused: $(grep '^berth:' "$D/tampered.log")"

step "6. boot the pulled machine with systemd-nspawn"
systemd-nspawn --register=no --keep-unit -q -D "$BERTH_IMAGE_ROOT/test" -b 2>&1 | tee "$D/boot.log"
grep -q "$MARKER" "$D/boot.log"
echo "marker seen: the pulled machine booted"

step "7. berth export-tar the machine, re-import it, compare"
"$BERTH" export-tar test "$D/test-export.tar.zst"
"$BERTH" import-tar "$D/test-export.tar.zst" test-again
( cd "$BERTH_IMAGE_ROOT/test" && find . -printf '%p %y %m %U:%G %l %n\n' | sort ) > "$D/a.lst"
( cd "$BERTH_IMAGE_ROOT/test-again" && find . -printf '%p %y %m %U:%G %l %n\n' | sort ) > "$D/b.lst"
diff -u "$D/a.lst" "$D/b.lst"
echo "round trip: identical ($(wc -l < "$D/a.lst") entries)"

step "summary"
cat <<EOF
release set    $D/release: $(cd "$D/release" && ls | tr '\n' ' ')
signatures     SHA256SUMS.gpg (gpg --verify: good), SHA256SUMS.sig (openssl: verified)
pulled         $URL/test.tar.xz -> $BERTH_IMAGE_ROOT/test (--verify=signature), tampered set refused
booted         systemd-nspawn: "$MARKER"
exported       $D/test-export.tar.zst, re-imported as test-again: same tree
EOF
