#!/usr/bin/env bash
# The control plane: kubeadm init with the pod CIDR, then podwire from deploy/.
set -euo pipefail
: "${NODE_IP:?}" "${POD_CIDR:?}" "${SERVICE_CIDR:?}" "${JOIN_TOKEN:?}"
export KUBECONFIG=/etc/kubernetes/admin.conf

if [ ! -f "$KUBECONFIG" ]; then
  # --pod-network-cidr makes the controller manager give every node a /24 of it as
  # spec.podCIDR: the agent's IPAM allocates from that.
  kubeadm init \
    --apiserver-advertise-address="$NODE_IP" \
    --pod-network-cidr="$POD_CIDR" \
    --service-cidr="$SERVICE_CIDR" \
    --token="$JOIN_TOKEN" --token-ttl=0
fi
install -d -o vagrant -g vagrant /home/vagrant/.kube
install -o vagrant -g vagrant -m 0600 "$KUBECONFIG" /home/vagrant/.kube/config

kubectl apply -f /vagrant/deploy/
kubectl -n podwire-system rollout status daemonset/podwire-agent --timeout=10m
kubectl wait --for=condition=Ready "node/$(hostname)" --timeout=5m
