#!/usr/bin/env bash
# run.sh is the one entry point of the e2e suite: it installs the
# prerequisites (Debian packages, helm), builds the Kubernetes binaries that
# are not cached yet, and runs `go test -tags e2e -v ./...` in e2e/, printing
# each phase's wall time. Works on a fresh machine and on a warm one.
#
#   NODEAGENT_CACHE      cache root (default $HOME/.cache/nodeagent)
#   E2E_RUN              optional `go test -run` pattern
#   E2E_TIMEOUT          go test timeout (default 40m)
#   NODEAGENT_E2E_KEEP   keep each run's temporary directory (logs, configs)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Go lives in /usr/local/go on these machines; a bare CI environment may not
# have it on PATH.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:${PATH}"
fi
e2e="$(cd "${here}/.." && pwd)"
run_start=$(date +%s)
declare -a summary=()

phase() {
	local name=$1
	shift
	local start rc=0
	start=$(date +%s)
	echo "==> ${name}"
	"$@" || rc=$?
	local took=$(($(date +%s) - start))
	summary+=("$(printf '%-22s %5ss  %s' "${name}" "${took}" "$([[ ${rc} -eq 0 ]] && echo ok || echo "FAILED (${rc})")")")
	echo "==> ${name}: ${took}s (exit ${rc})"
	return "${rc}"
}

print_summary() {
	echo
	echo "e2e phase wall times:"
	for l in "${summary[@]}"; do echo "  ${l}"; done
	echo "  $(printf '%-22s %5ss' total $(($(date +%s) - run_start)))"
}
trap print_summary EXIT

phase prereqs "${here}/prereqs.sh"
phase build-k8s "${here}/build-k8s.sh"
# Compile the tests (and download modules) outside the timed test phase.
compile_tests() {
	(cd "${e2e}" && go vet -tags e2e ./... && go test -tags e2e -count=1 -run '^$' ./... >/dev/null)
}
phase compile-tests compile_tests
# -p 1: one package at a time. Every cluster uses the same host-wide names
# (bridges, chains, the agent's port), so two at once would collide.
args=(-tags e2e -count=1 -v -p 1 -timeout "${E2E_TIMEOUT:-40m}")
if [[ -n "${E2E_RUN:-}" ]]; then
	args+=(-run "${E2E_RUN}")
fi
run_tests() {
	(cd "${e2e}" && go test "${args[@]}" ./...)
}
rc=0
phase go-test run_tests || rc=$?
if ((rc != 0)); then
	# A test binary killed by the go test timeout skips its t.Cleanup
	# teardown. Remove what it left (e2e-clean names each thing), so the
	# machine is left as it was found; the run still fails.
	echo "==> go test failed: removing anything a killed test left behind"
	(cd "${e2e}" && go run ./cmd/e2e-clean) || true
fi
exit "${rc}"
