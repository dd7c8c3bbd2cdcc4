# The front door. `make up` builds what the lab needs and starts it;
# `make test` runs every check CI runs. See README.md.

CARGO   ?= cargo
LAB     := target/release/lab
APT_DEPS := mmdebstrap redis-server postgresql-15 nginx-light wrk iproute2

.PHONY: all build images up down status test lint unit bench deps help

all: build

help:
	@echo "make up      build the binaries and images, start the default lab"
	@echo "make test    formatting, clippy, unit, integration and end-to-end tests"
	@echo "make images  build the binaries and every lab image"
	@echo "make down    remove the default lab"
	@echo "make bench   the benchmarks in bench/ (slow; not part of test)"
	@echo "make deps    install the Debian packages the lab and its tests need (root)"

build:
	$(CARGO) build --release --workspace --bins

# mmdebstrap makes the Debian base image; everything else comes from cargo.
images: build
	@command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap is not installed: run 'sudo apt-get install mmdebstrap' (or 'make deps')"; exit 1; }
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
test: images lint
	$(CARGO) test --workspace --no-fail-fast

bench: images
	bash bench/run.sh

deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_DEPS)
