package agent

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/agent/kube"
)

// A Feature owns one node capability. Its constructor only validates and
// allocates; Run does the I/O.
//
// Run blocks until ctx is done and returns only after every goroutine it
// started has exited. Run is repeatable: after a failure the supervisor calls
// it again on the same value ("ensure it exists"). Cancelling Run never
// destroys host state that pods rely on (an array, a mount, the DNS
// interface) unless the feature's config says so.
type Feature interface {
	Name() string
	Run(ctx context.Context) error
}

// ReadyChecker is implemented by features that can gate the node's startup
// taint. Ready returns nil once the feature's capability is usable on the
// node, and an error saying what is missing otherwise. It must be cheap and
// safe to call from any goroutine.
type ReadyChecker interface {
	Ready() error
}

// DegradedReporter is implemented by features that keep working while a
// part of their capability is impaired (a DNS zone whose upstreams are all
// down). Degraded lists what is impaired, nothing when all is well; /readyz
// reports it for a running feature without gating readiness. It must be
// cheap and safe to call from any goroutine.
type DegradedReporter interface {
	Degraded() []string
}

// Deps is what the agent hands a feature's constructor. Every field is set;
// Kube is nil when the agent runs without a cluster.
type Deps struct {
	// Log is tagged feature=<name>.
	Log *slog.Logger
	// Metrics registers the feature's collectors. It belongs to one feature
	// instance: when a reload replaces the instance, its collectors are
	// unregistered, so New may register unconditionally.
	Metrics prometheus.Registerer
	// Host locates host files (proc, sys, dev, run, etc) below --host-root.
	Host hostpath.Paths
	// Exec runs host commands (mdadm, mkfs, nft, mount-s3).
	Exec hostexec.Runner
	// Kube talks to the API server about this node; nil without a cluster.
	Kube *kube.Client
	// NodeName is the Kubernetes node this agent runs on.
	NodeName string
}
