#!/usr/bin/env bash
# imagewarm benchmark (make bench-imagewarm): the agent vs `ctr images pull`
# one after another vs CRI PullImage of all five at once, on an empty
# containerd each round, five images (~330 MB) from a local registry.
# Measure under the heavy lock: flock /tmp/nodeagent-e2e.lock make bench-imagewarm
#   BENCH_ROUNDS (default 3); BENCH_DEBUG=1 prints the agent's log and its and
#   containerd's CPU; BENCH_ONLY=02 runs only those methods (0 agent, 1 ctr,
#   2 CRI); BENCH_PROFILE=DIR saves a containerd CPU profile per run (from its
#   debug socket, BENCH_PROFILE_SECS long, default 3) for go tool pprof.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/lib.sh
bash imagewarm/hack/prereqs.sh
make --no-print-directory build >/dev/null
go run ./imagewarm/hack/benchwarm --agent bin/nodeagent --rounds "${BENCH_ROUNDS:-3}"
