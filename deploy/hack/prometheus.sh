#!/usr/bin/env bash
# Prints the path of the pinned Prometheus server for the e2e Prometheus
# check, installing it with `go install` into
# ${NODEAGENT_CACHE:-$HOME/.cache/nodeagent}/bin when missing or another
# version (about 5 minutes cold on 2 cores). Not Debian's prometheus
# package: Debian builds it without Kubernetes service discovery, which the
# check needs to discover the agent the way the chart's ServiceMonitor does.
# $PROMETHEUS, when set, wins.
set -euo pipefail

# Prometheus 3.x's Go module version (v0.316.0 is Prometheus 3.16).
PROMETHEUS_VERSION=v0.316.0

if [[ -n "${PROMETHEUS:-}" ]]; then
	echo "$PROMETHEUS"
	exit 0
fi
. "$(dirname "${BASH_SOURCE[0]}")/../../.ci/lib.sh"
CGO_ENABLED=0 go_tool prometheus "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
