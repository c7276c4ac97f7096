#!/usr/bin/env bash
# Prints the path of the pinned helm, installing it with `go install` into
# ${NODEAGENT_CACHE:-$HOME/.cache/nodeagent}/bin if it is missing or another
# version. $HELM, when set, wins. For CI and scripts:
#   export HELM=$(deploy/hack/helm.sh)   # then: go test ./deploy
set -euo pipefail

# The helm version the manifests are rendered with (manifests_test.go reads it from here).
HELM_VERSION=v3.22.0

if [[ -n "${HELM:-}" ]]; then
	echo "$HELM"
	exit 0
fi
. "$(dirname "${BASH_SOURCE[0]}")/../../.ci/lib.sh"
CGO_ENABLED=0 go_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
