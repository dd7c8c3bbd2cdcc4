#!/usr/bin/env bash
# `make bundle`: the one file an instructor hands a class (docs/teaching.md).
#
#   dist/scaling-lab-VERSION-linux-ARCH.tar.gz
#     scaling-lab-VERSION/lab                                 static CLI
#     scaling-lab-VERSION/scaling-lab-images-VERSION.tar.zst  every image (`lab images save`)
#     scaling-lab-VERSION/README.md                           what a student types
#
# The lab images must exist (`make images`, which the Makefile runs first).
#
# Why a static glibc binary and not musl: the musl target cannot be
# installed here (no network beyond crates.io and Debian's mirror). glibc
# links statically (`+crt-static`); what it cannot do statically is load NSS
# modules, i.e. look up host and user names through /etc/nsswitch.conf. The
# lab never does: Docker is a unix socket path and every address it dials is
# the literal 127.0.0.1 (`lab load` turns `localhost` into it before
# dialling). A DOCKER_HOST naming a remote host by name would need the
# machine's NSS modules of the same glibc version; a class never sets one.
# The static binary saves the images itself below: proof it reaches Docker.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
arch=$(uname -m)
target="$arch-unknown-linux-gnu"
name="scaling-lab-$version"
images="scaling-lab-images-$version.tar.zst"
stage="dist/$name"
out="dist/$name-linux-$arch.tar.gz"

echo "bundle: building a static lab for $target"
RUSTFLAGS='-C target-feature=+crt-static' "${CARGO:-cargo}" build --release --target "$target" -p lab
bin="target/$target/release/lab"

# Static means no interpreter and no shared libraries: refuse anything else.
# (ldd exits 0 either way; its words differ.)
if ! ldd "$bin" 2>&1 | grep -Eq 'statically linked|not a dynamic executable'; then
  echo "error: $bin is dynamically linked ($(ldd "$bin" 2>&1 | tr -s ' \n' ' ')): the bundle needs a static binary; check RUSTFLAGS and that libc6-dev is installed" >&2
  exit 1
fi
if command -v file >/dev/null 2>&1; then
  file -b "$bin" | grep -Eq 'static(ally|-pie) linked' || {
    echo "error: file(1) does not call $bin static: $(file -b "$bin")" >&2
    exit 1
  }
fi

rm -rf "$stage"
mkdir -p "$stage"
cp "$bin" "$stage/lab"
# The static binary itself saves the images: proof that it reaches Docker's socket.
"$stage/lab" images save --level 10 "$stage/$images"

cat > "$stage/README.md" <<EOF
# scaling-lab $version for Linux ($arch)

A chaos lab for learning how web apps scale: a load balancer, web servers,
Redis and PostgreSQL with a replica, each in its own container on your
machine. You need Docker and nothing else (no internet, no registry).

1. Unpack (you have done it if you read this):

       tar xzf $name-linux-$arch.tar.gz
       cd $name

2. Load the images into Docker (a minute or two; once per machine):

       ./lab images load $images

3. Check the machine, then start the lab:

       ./lab doctor
       ./lab up

   \`lab doctor\` prints one line per check; a FAIL line says what to do.
   \`lab up\` prints the address to open, http://127.0.0.1:8080 by default
   (\`./lab up --port 0\` picks a free port if 8080 is taken).

4. Break things and watch:

       ./lab status
       ./lab load --scenario sessions     # in one terminal
       ./lab crash server-1               # in another
       ./lab lesson list
       ./lab down                         # remove everything when done

\`./lab --help\` lists every command with examples. If Docker says
"permission denied", add yourself to the docker group (\`sudo usermod -aG
docker \$USER\`) and log in again.
EOF

echo "bundle: packing $out"
# The images file is already zstd-compressed; gzip -1 only wraps it.
tar -C dist -cf - "$name" | gzip -1 > "$out.partial"
mv "$out.partial" "$out"
rm -rf "$stage"
ls -l "$out"
