#!/usr/bin/env bash
# Installs what deploy/'s tests need: Debian's prometheus package (2.42),
# which ships promtool (`promtool check rules`, `promtool test rules`).
# Cheaper than `go install .../cmd/promtool` (about 4 minutes cold): one
# package, seconds. (e2e's Prometheus server is go-installed instead, by
# hack/prometheus.sh: Debian's has no Kubernetes service discovery.)
# Its service is kept from starting (apt_install's policy-rc.d).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../.ci/lib.sh"
apt_install prometheus
