#!/usr/bin/env bash
# prereqs.sh installs what the e2e cluster needs and is idempotent:
#   - Debian packages (etcd, containerd, runc, registry, CNI plugins, iptables,
#     conntrack, ...) only when missing, without starting their services;
#   - pinned Go tools (helm) into the cache, only when missing.
#
#   NODEAGENT_CACHE  cache root (default $HOME/.cache/nodeagent)
set -euo pipefail

HELM_VERSION=v3.22.0
cache="${NODEAGENT_CACHE:-${HOME:-/root}/.cache/nodeagent}"
tools_bin="${cache}/bin"

phase_start=$(date +%s)
phase() {
	local now
	now=$(date +%s)
	echo "prereqs: $1 took $((now - phase_start))s"
	phase_start=${now}
}

packages=(
	etcd-server containerd runc docker-registry containernetworking-plugins
	iptables nftables conntrack iproute2 kmod util-linux mount procps
	# fetched (not installed) by the agent image builder, needed here for
	# apt-get download / dpkg-deb:
	apt dpkg
)
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
	# Packages such as etcd-server and containerd start a system service on
	# install; the e2e cluster runs its own private instances, so keep the
	# package scripts from starting anything while we install.
	policy=/usr/sbin/policy-rc.d
	own_policy=""
	if [[ ! -e ${policy} ]]; then
		printf '#!/bin/sh\nexit 101\n' >"${policy}"
		chmod +x "${policy}"
		own_policy=1
	fi
	trap '[[ -n "${own_policy}" ]] && rm -f "${policy}"' EXIT
	export DEBIAN_FRONTEND=noninteractive
	# The package lists may be missing on a fresh machine; refresh them
	# once if an install fails for that reason.
	if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
		apt-get update -q
		apt-get install -y -q --no-install-recommends "${missing[@]}"
	fi
	phase "apt-get install"
else
	echo "prereqs: Debian packages present"
fi
# The agent image builder resolves packages with apt (apt-get install -s,
# apt-get download): it needs the package lists.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
	apt-get update -q
	phase "apt-get update"
fi

# helm in the same place and version as deploy/hack/render.sh uses it.
helm="${tools_bin}/helm"
if [[ ! -x "${helm}" ]] || ! go version -m "${helm}" 2>/dev/null | grep -q "helm.sh/helm/v3[[:space:]]*${HELM_VERSION}[[:space:]]"; then
	echo "prereqs: go install helm ${HELM_VERSION} into ${tools_bin}"
	mkdir -p "${tools_bin}"
	GOBIN="${tools_bin}" CGO_ENABLED=0 nice -n 10 go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
	phase "go install helm"
else
	echo "prereqs: helm ${HELM_VERSION} cached at ${helm}"
fi
echo "prereqs: done"
