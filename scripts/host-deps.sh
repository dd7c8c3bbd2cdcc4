#!/usr/bin/env bash
# The host packages a `make` target needs, installed before anything is
# compiled, so a fresh machine fails (or succeeds) in its first second rather
# than after minutes of compiling.
#
#   scripts/host-deps.sh up      what `make up` / `make images` needs
#   scripts/host-deps.sh test    what `make test` needs (real Redis, PostgreSQL,
#                                headless Chromium and its WebDriver for the dashboard)
#   scripts/host-deps.sh bench   what `make bench` needs (nginx, wrk, compose)
#
# Installs what is missing when it can (running as root, or sudo without a
# password prompt); otherwise prints the one command that would, and fails.
set -euo pipefail

need=()
want() { # want COMMAND-OR-PATH PACKAGE
  if [[ $1 == /* ]]; then [[ -e $1 ]] && return; else command -v "$1" >/dev/null 2>&1 && return; fi
  need+=("$2")
}

case "${1:-up}" in
  up)    want mmdebstrap mmdebstrap ;;
  test)  want mmdebstrap mmdebstrap
         want redis-server redis-server
         want /usr/lib/postgresql/15/bin/postgres postgresql-15
         want chromium chromium
         want chromedriver chromium-driver ;;
  bench) want mmdebstrap mmdebstrap
         want nginx nginx-light
         want wrk wrk
         want docker-compose docker-compose ;;
  *) echo "usage: $0 up|test|bench" >&2; exit 2 ;;
esac

command -v docker >/dev/null 2>&1 || {
  echo "error: docker is not installed: install Docker Engine and start its daemon, then run make again" >&2
  exit 1
}
[[ ${#need[@]} -eq 0 ]] && exit 0

cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${need[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing host packages (${need[*]}) and no apt-get here: install them with your package manager, then run make again" >&2
  exit 1
fi
if [[ $(id -u) -eq 0 ]]; then
  echo "installing host packages: ${need[*]}"
  bash -c "$cmd"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  echo "installing host packages with sudo: ${need[*]}"
  sudo bash -c "$cmd"
else
  echo "error: missing host packages (${need[*]}): run 'sudo apt-get install -y ${need[*]}', then make again" >&2
  exit 1
fi
