#!/usr/bin/env bash
# Every node: build the podwire image from the synced repository and hand it to
# containerd, so the DaemonSet's image is present without a registry.
set -euo pipefail
image=localhost/podwire:0.1.0
archive=$(mktemp /tmp/podwire-image.XXXXXX.tar)
trap 'rm -f "$archive"' EXIT

podman build -q -f /vagrant/deploy/Containerfile -t "$image" /vagrant
rm -f "$archive"
podman save --format docker-archive -o "$archive" "$image"
ctr -n k8s.io images import "$archive"
