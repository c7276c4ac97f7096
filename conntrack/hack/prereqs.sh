#!/usr/bin/env bash
# prereqs.sh installs what the conntrack tests and benchmark use; idempotent:
#   - Debian packages iptables iproute2 (root tests in network namespaces),
#     conntrack (the `conntrack -L` reference in the benchmark), procps and
#     util-linux (setpriv, to run without CAP_NET_ADMIN),
#     only when missing;
#   - node_exporter v1.12.1 (the reference conntrack collector) into
#     $NODEAGENT_CACHE/bin (default ~/.cache/nodeagent/bin), only when missing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../.ci/lib.sh"

NODE_EXPORTER_VERSION=v1.12.1

apt_install iptables iproute2 conntrack procps util-linux
phase "conntrack apt packages"
ne=$(go_tool node_exporter "github.com/prometheus/node_exporter@${NODE_EXPORTER_VERSION}")
phase "node_exporter ${NODE_EXPORTER_VERSION}"
echo "prereqs: node_exporter at ${ne}"
