#!/bin/sh
# Merge Debian's kernel headers (the -common tree and the -amd64 tree of the newest
# installed version) into one directory, which bcc reads through BCC_KERNEL_SOURCE.
# The image keeps this copy for nodes that have no headers for their own kernel.
# Usage: merge-kernel-headers.sh DEST [SRC_ROOT (default /usr/src)]
set -eu
dest=${1:?usage: merge-kernel-headers.sh DEST [SRC_ROOT]}
src=${2:-/usr/src}
arch_tree=$(find "$src" -maxdepth 1 -name 'linux-headers-*-amd64' | sort -V | tail -n 1)
if [ -z "$arch_tree" ]; then
  echo "merge-kernel-headers: no linux-headers-*-amd64 under $src" >&2
  exit 1
fi
common_tree=${arch_tree%-amd64}-common
if [ ! -d "$common_tree" ]; then
  echo "merge-kernel-headers: $common_tree is missing" >&2
  exit 1
fi
mkdir -p "$dest"
cp -a "$common_tree/." "$dest/"
# The arch tree's generated headers and config go over the common tree.
cp -a --remove-destination "$arch_tree/." "$dest/"
