// Package e2e holds the end-to-end tests of nodeagent. They run against a
// real single-node cluster (package cluster) under the build tag "e2e":
//
//	go test -tags e2e -v ./...
//
// e2e/hack/run.sh installs the prerequisites, builds what is missing and
// runs them.
package e2e
