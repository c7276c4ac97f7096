#!/usr/bin/env bash
# bench.sh is `make bench-conntrack`: with CONNTRACK_BENCH_ENTRIES (default
# 1,000,000) entries injected over ctnetlink into a throwaway namespace's
# table, it prints side by side in one run the scrape duration (this
# collector vs node_exporter's conntrack collector), the DNS-flow count pass
# (time, extra RSS), `conntrack -L -p udp --dport 53 | wc -l` and a full dump
# with vishvananda/netlink's ConntrackTableList. Needs root; installs its
# prerequisites. Measure under the heavy lock:
#   flock /tmp/nodeagent-e2e.lock make bench-conntrack
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/lib.sh
bash conntrack/hack/prereqs.sh >/dev/null
if [[ $(id -u) -ne 0 ]]; then
	echo "bench-conntrack needs root (network namespaces, nf_conntrack_max)" >&2
	exit 1
fi
# The benchmark raises the global nf_conntrack_max for its million entries and
# restores it itself; restore it here too should the test binary be killed.
max_path=/proc/sys/net/netfilter/nf_conntrack_max
orig_max=$(cat "$max_path")
trap 'echo "$orig_max" >"$max_path"' EXIT
NODE_EXPORTER=$NODEAGENT_CACHE/bin/node_exporter go test -count=1 -run '^$' \
	-bench '^BenchmarkMillionEntries$' -benchtime 1x -timeout 20m ./conntrack
