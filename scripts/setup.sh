#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 machine for podwire: Debian packages, kernel
# headers bcc can find on a kernel with no matching headers, bpffs, and the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-bpfcc python3-venv python3-scapy linux-headers-amd64 bpftool
  iproute2 iptables iperf3 sockperf tcpdump socat ncat
  containernetworking-plugins podman containerd runc busybox-static
  shellcheck iputils-ping
  vagrant vagrant-libvirt
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# bcc looks for /lib/modules/$(uname -r)/{build,source}. Debian has no headers for
# this kernel; the newest installed linux-headers pair works for TC programs.
kver=$(uname -r)
moddir=/lib/modules/$kver
if [ ! -e "$moddir/build/include" ]; then
  arch_hdr=$(find /usr/src -maxdepth 1 -name 'linux-headers-*-amd64' | sort -V | tail -n 1)
  common_hdr=${arch_hdr%-amd64}-common
  if [ -z "$arch_hdr" ] || [ ! -d "$common_hdr" ]; then
    echo "setup: no linux-headers found under /usr/src" >&2
    exit 1
  fi
  mkdir -p "$moddir"
  ln -sfn "$arch_hdr" "$moddir/build"
  ln -sfn "$common_hdr" "$moddir/source"
  echo "setup: bcc will use $arch_hdr for kernel $kver"
fi

if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
fi

# The venv sees Debian's bcc through --system-site-packages.
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.podwire-installed
# cni/shim.py is installed as a copied script (podwire-cni), so it is part of the stamp.
want=$(cat pyproject.toml cni/shim.py | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
