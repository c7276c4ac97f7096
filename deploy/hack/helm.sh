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
cache=${NODEAGENT_CACHE:-$HOME/.cache/nodeagent}
helm=$cache/bin/helm
# `go version -m` names the module version the binary was built from.
if [[ ! -x "$helm" ]] || ! go version -m "$helm" 2>/dev/null | grep -q "helm.sh/helm/v3[[:space:]]*$HELM_VERSION[[:space:]]"; then
	echo "installing helm $HELM_VERSION into $cache/bin (about a minute)" >&2
	mkdir -p "$cache/bin"
	GOBIN=$cache/bin go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi
echo "$helm"
