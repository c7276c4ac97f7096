#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, and
# nothing that is already there: Debian packages, pinned Go tools, built
# Kubernetes binaries (cached in $NODEAGENT_CACHE, default ~/.cache/nodeagent).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

bash dnscache/hack/prereqs.sh
phase "dnscache prerequisites"
bash conntrack/hack/prereqs.sh
phase "conntrack prerequisites"
bash interrupt/hack/prereqs.sh
phase "interrupt prerequisites"
bash imagewarm/hack/prereqs.sh
phase "imagewarm prerequisites"
bash raid/hack/prereqs.sh
phase "raid prerequisites (QEMU, Debian kernel, mdadm, xfsprogs)"
deploy/hack/helm.sh >/dev/null
phase "helm"
bash deploy/hack/prereqs.sh
phase "deploy prerequisites (promtool)"
