#!/bin/sh
# Lays out the container image's root filesystem: the release agent and exactly the shared
# libraries it links (as `ldd` resolves them on the build machine, with the dynamic loader), nothing
# else: no shell, no package manager, no base image. Used by `cargo xtask image` (buildah, from
# scratch) and by the Dockerfile's build stage, so both images hold the same files.
#
# Usage: rootfs.sh AGENT_BINARY DEST_DIR
set -eu
bin=$1
dest=$2
rm -rf "$dest"
mkdir -p "$dest/usr/bin"
# Debug info is half the binary and is not needed at run time.
if command -v objcopy >/dev/null 2>&1; then
  objcopy --strip-debug "$bin" "$dest/usr/bin/llm-observer"
else
  cp "$bin" "$dest/usr/bin/llm-observer"
fi
chmod 0755 "$dest/usr/bin/llm-observer"
# `name => /path (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file.
ldd "$bin" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }' | sort -u |
  while read -r lib; do
    mkdir -p "$dest$(dirname "$lib")"
    cp -L "$lib" "$dest$lib"
  done
# Fail here, not at the first container start, when a library is missing.
if [ "$(id -u)" = 0 ]; then
  chroot "$dest" /usr/bin/llm-observer --version
fi
