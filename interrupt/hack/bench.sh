#!/usr/bin/env bash
# bench.sh (make bench-interrupt): reaction time of the interrupt feature over
# BENCH_NOTICES spot notices (default 20) from the real ec2-metadata-mock,
# each to BENCH_EXECUTORS stand-in executors (default 4) in a private real
# containerd; p50/p90/p99 from the notice visible at the mock to the last
# executor signalled, beside the reference. Needs root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash interrupt/hack/prereqs.sh >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! go test -tags interruptbench -run '^TestBenchReaction$' -count=1 -v -timeout 20m ./interrupt/ >"$log" 2>&1; then
	cat "$log" >&2
	exit 1
fi
grep -E 'bench_test.go:[0-9]+: notice' "$log" | sed 's/^ *bench_test.go:[0-9]*: //'
sed -n '/^interrupt reaction time/,/^target/p' "$log"
