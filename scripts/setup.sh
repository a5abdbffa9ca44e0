#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 machine for podwire, run as root: the Debian
# packages of every program and library podwire runs (scripts/programs.txt,
# scripts/modules.txt), kernel headers bcc can find on a kernel with no matching
# headers, bpffs and the venv; then a check that every one of them is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rows of a list file: comments and blank lines dropped.
rows() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$1"; }

# Packages that bring no program of their own: the venv, the headers bcc compiles
# against, and the provider vagrant validates the VM lab's Vagrantfile with.
APT_PACKAGES=(python3-venv linux-headers-amd64 vagrant-libvirt)
mapfile -t -O "${#APT_PACKAGES[@]}" APT_PACKAGES < <(
  { rows scripts/programs.txt | awk '{print $2}'
    rows scripts/modules.txt | awk '$2 != "pip" {print $2}'; } | sort -u)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 \
    --no-install-recommends "${missing[@]}"
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
want=$(sha256sum < pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
# The CNI plugin as a runtime runs it (a launcher and the shim's module beside it), for
# the tests; rewritten every time, so it is never older than cni/shim.py.
.venv/bin/python -m podwire.cni.executable .venv/bin/podwire-cni

# The check: every listed program on PATH (or executable at its path), every listed
# module importable in the venv. A package that installed without its program, a
# PATH without /usr/sbin, a broken venv: each fails here, by name, not in a test.
absent=()
while read -r program package _; do
  command -v "$program" > /dev/null || absent+=("$program (Debian package $package)")
done < <(rows scripts/programs.txt)
mapfile -t modules < <(rows scripts/modules.txt | awk '{print $1}')
unimportable=$(.venv/bin/python - "${modules[@]}" <<'PY'
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:  # any failure to import is what the check reports
        print(f"{name} ({type(exc).__name__}: {exc})")
PY
)
if [ ${#absent[@]} -gt 0 ] || [ -n "$unimportable" ]; then
  for program in "${absent[@]}"; do echo "setup: missing program: $program" >&2; done
  while read -r module; do
    [ -n "$module" ] && echo "setup: cannot import in .venv: $module" >&2
  done <<< "$unimportable"
  echo "setup: FAILED: the programs and modules above are missing" >&2
  exit 1
fi
