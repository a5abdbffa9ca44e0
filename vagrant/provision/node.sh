#!/usr/bin/env bash
# Every node: containerd, kubeadm/kubelet/kubectl, and what podwire needs on the host
# (python3 for the CNI plugin, kernel headers for bcc, bpffs). Safe to run again.
set -euo pipefail
: "${K8S_MINOR:?K8S_MINOR, e.g. v1.31}" "${NODE_IP:?NODE_IP, the private address of this node}"
export DEBIAN_FRONTEND=noninteractive

# The kubelet refuses to run with swap on.
swapoff -a
sed -i '/[[:space:]]swap[[:space:]]/d' /etc/fstab

cat > /etc/modules-load.d/k8s.conf <<'MODULES'
overlay
br_netfilter
MODULES
modprobe overlay
modprobe br_netfilter
cat > /etc/sysctl.d/90-k8s.conf <<'SYSCTL'
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
SYSCTL
sysctl -q --system

apt-get update -q
# python3: the CNI plugin podwire installs in /opt/cni/bin is a small Python program
# that the runtime runs on the host. linux-headers: bcc in the agent compiles against
# the host's headers (the DaemonSet mounts /lib/modules and /usr/src).
apt-get install -y -q --no-install-recommends \
  containerd runc podman curl gpg ca-certificates apt-transport-https \
  python3 "linux-headers-$(uname -r)"

# kubeadm's kubelet uses the systemd cgroup driver; containerd must match.
mkdir -p /etc/containerd
containerd config default > /etc/containerd/config.toml
sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml
systemctl restart containerd

keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
mkdir -p /etc/apt/keyrings
curl -fsSL "https://pkgs.k8s.io/core:/stable:/${K8S_MINOR}/deb/Release.key" \
  | gpg --batch --yes --dearmor -o "$keyring"
echo "deb [signed-by=$keyring] https://pkgs.k8s.io/core:/stable:/${K8S_MINOR}/deb/ /" \
  > /etc/apt/sources.list.d/kubernetes.list
apt-get update -q
apt-get install -y -q kubelet kubeadm kubectl
apt-mark hold kubelet kubeadm kubectl

# Without it the kubelet would advertise the first NIC (the provider's NAT network,
# the same address on every VM); the agent tunnels to the InternalIP.
echo "KUBELET_EXTRA_ARGS=--node-ip=${NODE_IP}" > /etc/default/kubelet
systemctl enable kubelet
systemctl restart kubelet

# systemd mounts bpffs on Debian 12; the agent pins its maps there.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
