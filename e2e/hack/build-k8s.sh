#!/usr/bin/env bash
# build-k8s.sh builds the Kubernetes binaries the e2e cluster runs from the
# Go module proxy (e2e/tools/k8s pins k8s.io/kubernetes) into a cache outside
# the repository. Binaries already in the cache are skipped.
#
#   NODEAGENT_CACHE  cache root (default $HOME/.cache/nodeagent)
#   K8S_BINARIES     space-separated list to build (default: all five)
set -euo pipefail

K8S_VERSION=v1.35.4
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${here}/../tools/k8s"
cache="${NODEAGENT_CACHE:-${HOME:-/root}/.cache/nodeagent}"
bin="${cache}/k8s/${K8S_VERSION}/bin"
binaries="${K8S_BINARIES:-kubectl kube-scheduler kube-controller-manager kubelet kube-apiserver}"

minor="${K8S_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -s -w"

mkdir -p "${bin}"
total_start=$(date +%s)
for b in ${binaries}; do
	if [[ -x "${bin}/${b}" ]]; then
		echo "build-k8s: ${b} ${K8S_VERSION} cached at ${bin}/${b}"
		continue
	fi
	start=$(date +%s)
	echo "build-k8s: building ${b} ${K8S_VERSION} ..."
	# Build into a temporary name first so an interrupted build never
	# leaves a half-written binary that a later run would take as cached.
	(cd "${tools}" && CGO_ENABLED=0 nice -n 10 go build -trimpath -buildvcs=false -ldflags "${ldflags}" \
		-o "${bin}/.${b}.tmp" "k8s.io/kubernetes/cmd/${b}")
	mv "${bin}/.${b}.tmp" "${bin}/${b}"
	echo "build-k8s: built ${b} in $(($(date +%s) - start))s"
done
echo "build-k8s: total $(($(date +%s) - total_start))s, binaries in ${bin}"
