#!/usr/bin/env bash
# S3 mount benchmark (make bench-s3): the agent binary keeps an s3fs mount of
# a versitygw bucket; heal time from kill -9 of the daemon to the first good
# read (p50/p99 over BENCH_KILLS, default 20) beside the same kill without the
# agent, and 50 MB cold read MB/s through the mount beside a direct S3 GET.
# Measure under the heavy lock: flock /tmp/nodeagent-e2e.lock make bench-s3
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/lib.sh
bash imagewarm/hack/prereqs.sh
make --no-print-directory build >/dev/null
vgw=$(go_tool versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0)
go run ./imagewarm/hack/benchs3 --agent bin/nodeagent --versitygw "$vgw" \
	--kills "${BENCH_KILLS:-20}" --rounds "${BENCH_ROUNDS:-3}"
