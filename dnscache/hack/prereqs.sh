#!/usr/bin/env bash
# prereqs.sh installs what the dnscache tests and benchmark use; idempotent:
#   - Debian packages nftables iptables conntrack bind9-dnsutils dnsperf iproute2
#     util-linux (taskset), only when missing;
#   - CoreDNS v1.11.3 (the node-local-dns reference) into the cache, only when missing.
#
#   NODEAGENT_CACHE  cache root (default $HOME/.cache/nodeagent); CoreDNS lands in $NODEAGENT_CACHE/bin
set -euo pipefail

COREDNS_VERSION=v1.11.3
cache="${NODEAGENT_CACHE:-${HOME}/.cache/nodeagent}"
bin="${cache}/bin"

start=$(date +%s)
phase_start=${start}
phase() {
	local now
	now=$(date +%s)
	echo "prereqs: $1 took $((now - phase_start))s"
	phase_start=${now}
}

packages=(nftables iptables conntrack bind9-dnsutils dnsperf iproute2 util-linux procps)
missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("${p}")
	fi
done
if ((${#missing[@]} > 0)); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "prereqs: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	echo "prereqs: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
		apt-get update -q
		apt-get install -y -q --no-install-recommends "${missing[@]}"
	fi
	phase "apt-get install"
else
	phase "apt packages present"
fi

if [[ -x ${bin}/coredns ]] && "${bin}/coredns" -version 2>/dev/null | grep -q "CoreDNS-${COREDNS_VERSION#v}"; then
	phase "coredns ${COREDNS_VERSION} present"
else
	mkdir -p "${bin}"
	echo "prereqs: building coredns ${COREDNS_VERSION} (several minutes cold)"
	GOBIN="${bin}" GOFLAGS=-mod=mod go install "github.com/coredns/coredns@${COREDNS_VERSION}"
	phase "go install coredns"
fi
echo "prereqs: done in $(($(date +%s) - start))s; coredns at ${bin}/coredns"
