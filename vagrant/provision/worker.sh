#!/usr/bin/env bash
# A worker: join the cluster. podwire's DaemonSet then starts on it by itself.
set -euo pipefail
: "${CONTROL_PLANE:?HOST:PORT of the API server}" "${JOIN_TOKEN:?}"

if [ ! -f /etc/kubernetes/kubelet.conf ]; then
  # A lab shortcut: the bootstrap token is fixed in the Vagrantfile and the CA is not
  # pinned. Never join a real cluster this way.
  kubeadm join "$CONTROL_PLANE" --token "$JOIN_TOKEN" \
    --discovery-token-unsafe-skip-ca-verification
fi
