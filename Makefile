# The front door. `make up` builds what the lab needs and starts it;
# `make test` runs every check CI runs. See README.md.

CARGO   ?= cargo
LAB     := target/release/lab

.PHONY: fuzz all build images up down status test lint unit bench deps help host-up host-test host-bench bundle

all: build

help:
	@echo "make up      build the binaries and images, start the default lab"
	@echo "make test    formatting, clippy, unit, integration and end-to-end tests"
	@echo "make images  build the binaries and every lab image"
	@echo "make down    remove the default lab"
	@echo "make bench   the benchmarks in bench/ (slow; not part of test)"
	@echo "make fuzz    fuzz the balancer's HTTP/1.1 code (needs nightly and cargo-fuzz; FUZZ_RUNS)"
	@echo "make deps    install every host package the lab, its tests and benchmarks need"
	@echo "make bundle  dist/scaling-lab-VERSION-linux-ARCH.tar.gz: static lab, every image, a README (for a class)"

build:
	$(CARGO) build --release --workspace --bins

# Host packages are checked (and installed when root or password-less sudo
# allows) before anything compiles: a fresh machine learns what it lacks in
# its first second, not after minutes of compiling.
host-up:
	@scripts/host-deps.sh up
host-test:
	@scripts/host-deps.sh test
host-bench:
	@scripts/host-deps.sh bench

# mmdebstrap makes the Debian base image; everything else comes from cargo.
images: host-up build
	$(LAB) images build

up: images
	$(LAB) up

down:
	$(LAB) down

status:
	$(LAB) status

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --lib --bins

# Integration tests start real Redis and PostgreSQL from Debian's packages;
# end-to-end tests start real labs in Docker from the images built above.
test: host-test images lint
	CARGO=$(CARGO) scripts/test.sh

bench: host-bench images
	bash bench/run.sh

deps: host-test host-bench

# One file for a classroom: a static `lab`, every image, a README.
bundle: images
	CARGO=$(CARGO) scripts/bundle.sh

# The balancer's HTTP/1.1 code under libFuzzer (services/balancer/fuzz/README.md):
# 10 million runs of each target by default. Needs the nightly toolchain and
# `cargo install cargo-fuzz`; not part of `make test`.
FUZZ_RUNS ?= 10000000
fuzz:
	cd services/balancer/fuzz && for t in response proxy; do \
	  nice -n 10 cargo +nightly fuzz run -O -s none $$t corpus/$$t seeds/$$t -- \
	    -runs=$(FUZZ_RUNS) -print_final_stats=1 || exit 1; done
