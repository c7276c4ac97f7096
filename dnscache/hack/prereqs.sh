#!/usr/bin/env bash
# prereqs.sh installs what the dnscache tests and benchmark use; idempotent:
#   - Debian packages nftables iptables conntrack bind9-dnsutils dnsperf iproute2
#     util-linux (taskset) and unbound (the benchmark's second, C reference),
#     only when missing;
#   - CoreDNS v1.11.3 (the node-local-dns reference) into $NODEAGENT_CACHE/bin
#     (default ~/.cache/nodeagent/bin), only when missing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../.ci/lib.sh"

COREDNS_VERSION=v1.11.3

apt_install nftables iptables conntrack bind9-dnsutils dnsperf iproute2 util-linux procps unbound
phase "dnscache apt packages"
coredns=$(go_tool coredns "github.com/coredns/coredns@${COREDNS_VERSION}")
phase "coredns ${COREDNS_VERSION}"
echo "prereqs: coredns at ${coredns}"
