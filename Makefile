# nodeagent: see README.md. Every target installs what it needs.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
export NODEAGENT_CACHE ?= $(HOME)/.cache/nodeagent

.PHONY: all build build-arm64 run test test-unit e2e bench bench-idle bench-dns bench-conntrack bench-interrupt bench-imagewarm bench-s3 lint manifests clean

all: lint test

build: ## the agent for this machine, into bin/
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/nodeagent ./cmd/nodeagent

build-arm64: ## the agent for Graviton nodes
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/nodeagent-linux-arm64 ./cmd/nodeagent

run: ## the agent on the embedded default config, metrics on 127.0.0.1:9910
	go run ./cmd/nodeagent --log-format text --metrics-addr 127.0.0.1:9910

test: ## the whole suite: prerequisites, unit + root tests, lint, e2e
	bash .ci/test.sh

test-unit: ## fast tests only (root tests skip unless root)
	go test -race -count=1 ./...

e2e: ## the end-to-end suite on a real single-node cluster
	bash e2e/hack/run.sh

bench: bench-idle bench-dns bench-conntrack bench-interrupt bench-imagewarm bench-s3

bench-idle: build ## idle agent RSS and CPU, every feature disabled
	bash cmd/nodeagent/bench-idle.sh bin/nodeagent

bench-dns: ## dnscache vs CoreDNS (node-local-dns), dnsperf
	bash dnscache/hack/bench.sh

bench-conntrack: ## conntrack at 1M entries vs node_exporter, conntrack -L, ConntrackTableList
	bash conntrack/hack/bench.sh

bench-interrupt: ## interrupt reaction time over 20 spot notices (mock + real containerd)
	bash interrupt/hack/bench.sh

bench-imagewarm: ## image pre-pull vs ctr pull (sequential) and CRI PullImage x5 (concurrent)
	bash imagewarm/hack/bench.sh

bench-s3: ## S3 mount heal time over 20 daemon kills (vs no agent) and read MB/s through the mount vs direct S3 GET
	bash imagewarm/hack/bench-s3.sh

lint:
	bash .ci/lint.sh

manifests: ## regenerate deploy/manifests from the Helm chart
	bash deploy/hack/render.sh

clean:
	rm -rf bin
