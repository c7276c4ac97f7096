#!/usr/bin/env bash
# imagewarm benchmark (make bench-imagewarm): the agent vs `ctr images pull`
# one after another vs CRI PullImage of all five at once, on an empty
# containerd each round, five images (~330 MB) from a local registry.
# Measure under the heavy lock: flock /tmp/nodeagent-e2e.lock make bench-imagewarm
#   BENCH_ROUNDS (default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/lib.sh
bash imagewarm/hack/prereqs.sh
make --no-print-directory build >/dev/null
go run ./imagewarm/hack/benchwarm --agent bin/nodeagent --rounds "${BENCH_ROUNDS:-3}"
