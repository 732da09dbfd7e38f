# berth — build, test, demo and benchmark entry points.
# `make demo` and `make test` install what they need on a Debian 12 machine.

SHELL     := /bin/bash
GO        ?= go
BIN       := bin/berth
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
GOFLAGS_B := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"

# Debian packages the tests, the demo and the benchmarks run against.
# nix-setup-systemd is only recommended by nix-bin, and deps installs
# without recommends: it creates the nixbld build users and writes
# /etc/nix/nix.conf (sandbox = false, which the test flakes' /bin/sh
# builders need). libarchive-tools is bsdtar, an interop peer.
DEB_PKGS := nix-bin nix-setup-systemd systemd-container busybox-static debootstrap gnupg xz-utils zstd \
            pigz bzip2 e2fsprogs squashfs-tools docker-registry attr acl libcap2-bin \
            tar time ca-certificates fdisk gdisk openssl btrfs-progs skopeo libarchive-tools

.PHONY: all build deps test test-short demo bench fuzz vet clean fresh-check

all: build

build:
	# Static (no cgo): nothing needs libc, and it is 1.5 MiB less resident.
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_B) -o $(BIN) ./cmd/berth

# Install the real components (idempotent; needs root on Debian).
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

vet:
	$(GO) vet ./...

# All tests, fuzz seeds included. In CI (CI=true) a skipped test is a failure:
# internal/testenv fails instead of skipping there, and this rule catches any
# other skip.
test: deps vet
	@set -o pipefail; $(GO) test -count=1 -timeout 30m -v ./... 2>&1 | tee .test.log | \
		grep -vE '^\s*(=== (RUN|PAUSE|CONT|NAME)|--- PASS|PASS$$)'; \
	rc=$$?; \
	if [ "$$CI" = true ] && grep -q -- '--- SKIP' .test.log; then \
		echo "CI=true: skipped tests fail the run:"; grep -- '--- SKIP' .test.log; rc=1; \
	fi; \
	rm -f .test.log; exit $$rc

test-short:
	$(GO) test -short ./...

# Run each fuzz target for a while (FUZZTIME=1m make fuzz).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./formats -run '^$$' -fuzz FuzzTarSource -fuzztime $(FUZZTIME)
	$(GO) test ./export -run '^$$' -fuzz FuzzShiftACL -fuzztime $(FUZZTIME)
	$(GO) test ./export -run '^$$' -fuzz FuzzShiftCapability -fuzztime $(FUZZTIME)
	$(GO) test ./export -run '^$$' -fuzz FuzzParseNspawn -fuzztime $(FUZZTIME)
	$(GO) test ./formats/compress -run '^$$' -fuzz FuzzDetect -fuzztime $(FUZZTIME)
	$(GO) test ./formats/compress -run '^$$' -fuzz FuzzNewReader -fuzztime $(FUZZTIME)
	$(GO) test ./formats/compress -run '^$$' -fuzz FuzzInflate -fuzztime $(FUZZTIME)
	$(GO) test ./formats/compress -run '^$$' -fuzz FuzzCRC64 -fuzztime $(FUZZTIME)
	$(GO) test ./build -run '^$$' -fuzz '^FuzzParseRegistration$$' -fuzztime $(FUZZTIME)
	$(GO) test ./build -run '^$$' -fuzz '^FuzzParseBuildJSON$$' -fuzztime $(FUZZTIME)
	$(GO) test ./build -run '^$$' -fuzz '^FuzzNixErrorSummary$$' -fuzztime $(FUZZTIME)
	$(GO) test ./build -run '^$$' -fuzz '^FuzzParseAdd$$' -fuzztime $(FUZZTIME)
	$(GO) test ./build -run '^$$' -fuzz '^FuzzCompareNames$$' -fuzztime $(FUZZTIME)
	$(GO) test ./formats/raw -run '^$$' -fuzz FuzzInspect -fuzztime $(FUZZTIME)
	$(GO) test ./verify -run '^$$' -fuzz FuzzParseSums -fuzztime $(FUZZTIME)
	$(GO) test ./verify -run '^$$' -fuzz FuzzVerifySimpleSigning -fuzztime $(FUZZTIME)
	$(GO) test ./pull -run '^$$' -fuzz '^FuzzSiblingURL$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pull -run '^$$' -fuzz '^FuzzParseContentRange$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pull -run '^$$' -fuzz '^FuzzParseVerify$$' -fuzztime $(FUZZTIME)
	$(GO) test ./publish -run '^$$' -fuzz '^FuzzDefaultName$$' -fuzztime $(FUZZTIME)

# The main job end to end on built-in defaults.
demo: deps build
	./scripts/demo.sh

# berth against systemd's importd tools and the CLI compressors, same run.
bench: deps build
	./scripts/bench.sh

# The README's two commands on a fresh Debian 12 root (debootstrap, pivot_root
# in new namespaces): proves that make deps installs all they need.
fresh-check:
	./scripts/fresh-check.sh

clean:
	rm -rf bin
