#!/usr/bin/env bash
# The control plane: kubeadm init with the pod CIDR and no kube-proxy (podwire serves
# Services), then podwire from deploy/, told the API server's own address.
set -euo pipefail
: "${NODE_IP:?}" "${POD_CIDR:?}" "${SERVICE_CIDR:?}" "${JOIN_TOKEN:?}"
export KUBECONFIG=/etc/kubernetes/admin.conf

if [ ! -f "$KUBECONFIG" ]; then
  # --pod-network-cidr makes the controller manager give every node a /24 of it as
  # spec.podCIDR: the agent's IPAM allocates from that.
  kubeadm init \
    --skip-phases=addon/kube-proxy \
    --apiserver-advertise-address="$NODE_IP" \
    --pod-network-cidr="$POD_CIDR" \
    --service-cidr="$SERVICE_CIDR" \
    --token="$JOIN_TOKEN" --token-ttl=0
fi
install -d -o vagrant -g vagrant /home/vagrant/.kube
install -o vagrant -g vagrant -m 0600 "$KUBECONFIG" /home/vagrant/.kube/config

# Without kube-proxy the `kubernetes` ClusterIP answers only once podwire runs: the
# agents dial the API server's own address, the ConfigMap's api-server key.
deploy=$(mktemp -d)
cp /vagrant/deploy/*.yaml "$deploy/"
sed -i "s|^  api-server: \"\"\$|  api-server: \"$NODE_IP:6443\"|" "$deploy/20-config.yaml"
grep -q "^  api-server: \"$NODE_IP:6443\"\$" "$deploy/20-config.yaml"
kubectl apply -f "$deploy/"
rm -r "$deploy"
kubectl -n podwire-system rollout status daemonset/podwire-agent --timeout=10m
kubectl wait --for=condition=Ready "node/$(hostname)" --timeout=5m
