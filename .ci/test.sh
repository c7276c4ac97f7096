#!/usr/bin/env bash
# The whole test suite (`make test`): installs its prerequisites, runs every
# Go test with the race detector (as root, so the kernel tests run too),
# lint and the arm64 build, then the e2e suite on a real cluster, then the
# benchmarks. Under CI
# (CI=true) a skipped test is a failure: CI installs everything a test needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
started=$(date +%s)

bash .ci/prereqs.sh
HELM=$(deploy/hack/helm.sh)
export HELM
phase "prerequisites"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# e2e/tools/dashboard is a module of its own (the Grafana SDK and the PromQL
# parser stay out of the agent's go.mod).
{ go test -race -count=1 -v ./... && (cd e2e/tools/dashboard && go test -race -count=1 -v ./...); } >"$log" 2>&1
rc=$?
set -e
grep -E '^(ok|FAIL|---|panic:|\?)' "$log" | grep -v -- '--- PASS' || true
if ((rc != 0)); then
	echo "go test failed; the failing tests' output:" >&2
	grep -B2 -A30 -E '^(--- FAIL|panic:)' "$log" | head -400 >&2 || true
	exit $rc
fi
skips=$(grep -E -A1 -- '--- SKIP' "$log" || true)
if [[ -n $skips ]]; then
	echo "skipped tests:"
	echo "$skips"
	if [[ ${CI:-} == true ]]; then
		echo "CI installs every prerequisite, so nothing may skip" >&2
		exit 1
	fi
fi
echo "$(grep -c -E -- '^\s*--- PASS' "$log") passed, 0 failed"
phase "go test -race ./..."

bash .ci/lint.sh
phase "lint"

bash e2e/hack/run.sh
phase "e2e (real cluster)"

# The benchmarks print their figures (idle RSS/CPU; dnscache vs CoreDNS).
make --no-print-directory bench
phase "benchmarks"

echo "total: $(($(date +%s) - started))s"
