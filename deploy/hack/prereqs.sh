#!/usr/bin/env bash
# Installs what deploy/'s tests and the e2e Prometheus check need: Debian's
# prometheus package (2.42), which ships promtool (`promtool check rules`,
# `promtool test rules`) and the prometheus server e2e/ runs. Cheaper than
# `go install .../cmd/promtool` (about 4 minutes cold): one package, seconds.
# Its service is kept from starting (apt_install's policy-rc.d).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../.ci/lib.sh"
apt_install prometheus
