#!/usr/bin/env bash
# gofmt, go vet and staticcheck over both modules, and a vet + build of the
# agent for linux/arm64 (most analytics nodes are Graviton).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

unformatted=$(gofmt -l $(git ls-files '*.go'))
if [[ -n $unformatted ]]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
staticcheck=$(go_tool staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2)
for arch in amd64 arm64; do
	GOOS=linux GOARCH=$arch go vet ./...
	GOOS=linux GOARCH=$arch go build -o /dev/null ./cmd/nodeagent
	(cd e2e && GOOS=linux GOARCH=$arch go vet -tags e2e ./...)
	(cd e2e/tools/dashboard && GOOS=linux GOARCH=$arch go vet ./...)
done
"$staticcheck" ./...
(cd e2e && "$staticcheck" -tags e2e ./...)
(cd e2e/tools/dashboard && "$staticcheck" ./...)
phase "lint (gofmt, vet and build for amd64+arm64, staticcheck)"
