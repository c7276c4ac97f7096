#!/usr/bin/env bash
# prereqs.sh installs what the e2e cluster needs and is idempotent:
#   - Debian packages (etcd, containerd, runc, registry, CNI plugins, iptables,
#     conntrack, ...) only when missing, without starting their services;
#   - helm, pinned by deploy/hack/helm.sh, into the cache, only when missing;
#   - CoreDNS, pinned by dnscache/hack/prereqs.sh, into the cache, only when missing.
#
#   NODEAGENT_CACHE  cache root (default $HOME/.cache/nodeagent)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "${repo}/.ci/lib.sh"

apt_install etcd-server containerd runc docker-registry containernetworking-plugins \
	iptables nftables conntrack iproute2 kmod util-linux mount procps \
	apt dpkg # the agent image builder runs apt-get download and dpkg-deb
phase "e2e apt packages"
# The agent image builder resolves packages with apt (apt-get install -s,
# apt-get download): it needs the package lists.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
	apt-get update -q
	phase "apt-get update"
fi
# helm in the same place and version as deploy/hack/render.sh uses it.
echo "prereqs: helm at $("${repo}/deploy/hack/helm.sh")"
phase "helm"
# The Prometheus server for the e2e Prometheus check (go install, pinned).
echo "prereqs: prometheus at $("${repo}/deploy/hack/prometheus.sh")"
phase "prometheus"
# CoreDNS as the cluster DNS (coredns_test.go): the version and binary
# dnscache's benchmark pins (dnscache/hack/prereqs.sh), into the same cache.
coredns_version=$(sed -n 's/^COREDNS_VERSION=//p' "${repo}/dnscache/hack/prereqs.sh")
echo "prereqs: coredns at $(go_tool coredns "github.com/coredns/coredns@${coredns_version}")"
phase "coredns ${coredns_version}"
# ec2-metadata-mock for the interrupt e2e test.
bash "${repo}/interrupt/hack/prereqs.sh"
phase "interrupt"
# versitygw for the S3 mount test.
bash "${repo}/imagewarm/hack/prereqs.sh"
phase "imagewarm"
