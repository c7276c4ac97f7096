package interrupt

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodeagent/nodeagent/agent/config"
)

// Notice kinds: the value of the nodeagent.io/interruption taint, the "kind"
// label of the metrics and the keys of policy.
const (
	KindSpot        = "spot-interruption"        // spot/instance-action
	KindRebalance   = "rebalance-recommendation" // events/recommendations/rebalance
	KindMaintenance = "scheduled-maintenance"    // events/maintenance/scheduled
	KindASG         = "asg-termination"          // autoscaling/target-lifecycle-state = Terminated
	KindDisruption  = "disruption"               // Karpenter's disruption taint
)

var kinds = []string{KindSpot, KindRebalance, KindMaintenance, KindASG, KindDisruption}

// Actions a policy can take for a notice kind.
const (
	ActionIgnore       = "ignore"       // count and log only
	ActionTaint        = "taint"        // taint the Node so no new executors land
	ActionDecommission = "decommission" // taint, then tell every executor
)

// Strategies to tell an executor.
const (
	StrategySignal = "signal" // the signal to the container's main process (containerd task API)
	StrategyEvict  = "evict"  // the Eviction API; the pod's preStop hook signals it
)

// Fallbacks for executors still running at the deadline.
const (
	FallbackNone  = "none"
	FallbackEvict = "evict"
)

// Config is the interrupt section of the agent config.
type Config struct {
	Enabled      bool               `yaml:"enabled"`
	IMDS         IMDSConfig         `yaml:"imds"`
	Taints       []TaintTrigger     `yaml:"taints"`
	Policy       PolicyConfig       `yaml:"policy"`
	Decommission DecommissionConfig `yaml:"decommission"`
	Containerd   ContainerdConfig   `yaml:"containerd"`
}

// IMDSConfig is how the instance metadata service is watched.
type IMDSConfig struct {
	// Enabled watches IMDS; turn it off off EC2 (taint triggers still work).
	Enabled bool `yaml:"enabled"`
	// Endpoint is the IMDS base URL ("" = the SDK's default, http://169.254.169.254).
	Endpoint string `yaml:"endpoint"`
	// PollInterval between polls of the four notice paths, jittered by up to 10%.
	PollInterval time.Duration `yaml:"pollInterval"`
	// Timeout bounds one request.
	Timeout time.Duration `yaml:"timeout"`
	// AllowIMDSv1 falls back to token-less requests when no token can be had.
	AllowIMDSv1 bool `yaml:"allowIMDSv1"`
	// FactsInterval is how often the node facts (instance type, lifecycle,
	// zone, AMI) are read again; they are read once at start.
	FactsInterval time.Duration `yaml:"factsInterval"`
}

// TaintTrigger starts a notice of Kind when Key appears on the own Node.
type TaintTrigger struct {
	Key  string `yaml:"key"`
	Kind string `yaml:"kind"`
}

// PolicyConfig says what each notice kind does.
type PolicyConfig struct {
	SpotInterruption        string `yaml:"spotInterruption"`
	RebalanceRecommendation string `yaml:"rebalanceRecommendation"`
	ScheduledMaintenance    string `yaml:"scheduledMaintenance"`
	ASGTermination          string `yaml:"asgTermination"`
	Disruption              string `yaml:"disruption"`
	// MaintenanceLeadTime: a scheduled maintenance decommissions this long
	// before its NotBefore (at once when less is left).
	MaintenanceLeadTime time.Duration `yaml:"maintenanceLeadTime"`
}

// DecommissionConfig is how the executors are told.
type DecommissionConfig struct {
	// Taint is the key of the NoSchedule taint put on the Node (value: the kind).
	Taint string `yaml:"taint"`
	// Selector is the label selector of the executor pods; drivers never match it.
	Selector string `yaml:"selector"`
	// Container is the executor's container name in the pod ("" = the first).
	Container string `yaml:"container"`
	// Strategy is signal or evict.
	Strategy string `yaml:"strategy"`
	// Signal sent by the signal strategy (spark.executor.decommission.signal).
	Signal string `yaml:"signal"`
	// Deadline is how long executors get to exit after they are told; it is
	// cut to end DeadlineMargin before the notice's own time.
	Deadline       time.Duration `yaml:"deadline"`
	DeadlineMargin time.Duration `yaml:"deadlineMargin"`
	// Fallback for executors still running at the deadline: none or evict.
	Fallback string `yaml:"fallback"`
	// GuardEviction keeps a drain (Karpenter, NTH) from evicting a signalled
	// executor until it exits or the deadline passes, with a
	// PodDisruptionBudget per executor: the drain's preStop hook would send
	// the signal a second time, which kills a decommissioning executor.
	GuardEviction bool `yaml:"guardEviction"`
}

// ContainerdConfig locates containerd's API.
type ContainerdConfig struct {
	// Socket is containerd's gRPC socket, below the host root.
	Socket string `yaml:"socket"`
	// Namespace is CRI's containerd namespace.
	Namespace string `yaml:"namespace"`
}

// DefaultConfig is the feature as the README describes it, disabled.
func DefaultConfig() *Config {
	return &Config{
		Enabled: false,
		IMDS: IMDSConfig{
			Enabled:       true,
			Endpoint:      "",
			PollInterval:  time.Second,
			Timeout:       2 * time.Second,
			AllowIMDSv1:   false,
			FactsInterval: 10 * time.Minute,
		},
		Taints: []TaintTrigger{
			{Key: "karpenter.sh/disrupted", Kind: KindDisruption},
			{Key: "karpenter.sh/disruption", Kind: KindDisruption},
			{Key: "aws-node-termination-handler/spot-itn", Kind: KindSpot},
			{Key: "aws-node-termination-handler/rebalance-recommendation", Kind: KindRebalance},
			{Key: "aws-node-termination-handler/scheduled-maintenance", Kind: KindMaintenance},
			{Key: "aws-node-termination-handler/asg-lifecycle-termination", Kind: KindASG},
		},
		Policy: PolicyConfig{
			SpotInterruption:        ActionDecommission,
			RebalanceRecommendation: ActionTaint,
			ScheduledMaintenance:    ActionDecommission,
			ASGTermination:          ActionDecommission,
			Disruption:              ActionDecommission,
			MaintenanceLeadTime:     10 * time.Minute,
		},
		Decommission: DecommissionConfig{
			Taint:          "nodeagent.io/interruption",
			Selector:       "spark-role=executor",
			Container:      "spark-kubernetes-executor",
			Strategy:       StrategySignal,
			Signal:         "SIGPWR",
			Deadline:       100 * time.Second,
			DeadlineMargin: 5 * time.Second,
			Fallback:       FallbackNone,
			GuardEviction:  true,
		},
		Containerd: ContainerdConfig{Socket: "/run/containerd/containerd.sock", Namespace: "k8s.io"},
	}
}

// IsEnabled reports whether the feature runs.
func (c *Config) IsEnabled() bool { return c.Enabled }

// Validate reports every problem with its key path.
func (c *Config) Validate() error {
	var errs config.Errors
	m := c.IMDS
	if m.Endpoint != "" {
		if u, err := url.Parse(m.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs.Addf("imds.endpoint", "must be an http(s) URL like http://169.254.169.254, got %q", m.Endpoint)
		}
	}
	if m.PollInterval < 100*time.Millisecond {
		errs.Addf("imds.pollInterval", "must be >= 100ms, got %s", m.PollInterval)
	}
	if m.Timeout < 10*time.Millisecond {
		errs.Addf("imds.timeout", "must be >= 10ms, got %s", m.Timeout)
	}
	if m.FactsInterval < time.Second {
		errs.Addf("imds.factsInterval", "must be >= 1s, got %s", m.FactsInterval)
	}
	seen := map[string]bool{}
	for i, t := range c.Taints {
		p := fmt.Sprintf("taints[%d]", i)
		if msgs := validation.IsQualifiedName(t.Key); len(msgs) > 0 {
			errs.Addf(p+".key", "must be a taint key (%s), got %q", strings.Join(msgs, "; "), t.Key)
		} else if seen[t.Key] {
			errs.Addf(p+".key", "%q is listed twice", t.Key)
		}
		seen[t.Key] = true
		if !slices.Contains(kinds, t.Kind) {
			errs.Addf(p+".kind", "must be one of %s, got %q", strings.Join(kinds, ", "), t.Kind)
		}
	}
	pol := c.Policy
	for _, a := range []struct{ key, v string }{
		{"policy.spotInterruption", pol.SpotInterruption},
		{"policy.rebalanceRecommendation", pol.RebalanceRecommendation},
		{"policy.scheduledMaintenance", pol.ScheduledMaintenance},
		{"policy.asgTermination", pol.ASGTermination},
		{"policy.disruption", pol.Disruption},
	} {
		if a.v != ActionIgnore && a.v != ActionTaint && a.v != ActionDecommission {
			errs.Addf(a.key, "must be ignore, taint or decommission, got %q", a.v)
		}
	}
	if pol.MaintenanceLeadTime < 0 {
		errs.Addf("policy.maintenanceLeadTime", "must be >= 0s, got %s", pol.MaintenanceLeadTime)
	}
	d := c.Decommission
	if msgs := validation.IsQualifiedName(d.Taint); len(msgs) > 0 {
		errs.Addf("decommission.taint", "must be a taint key (%s), got %q", strings.Join(msgs, "; "), d.Taint)
	} else if seen[d.Taint] {
		errs.Addf("decommission.taint", "%q is also a trigger in taints: the agent would trigger itself", d.Taint)
	}
	if sel, err := labels.Parse(d.Selector); err != nil {
		errs.Addf("decommission.selector", "must be a label selector: %v", err)
	} else if sel.Empty() {
		errs.Addf("decommission.selector", "must not be empty: it would match drivers and every other pod")
	}
	if d.Container != "" {
		if msgs := validation.IsDNS1123Label(d.Container); len(msgs) > 0 {
			errs.Addf("decommission.container", "must be a container name (%s), got %q", strings.Join(msgs, "; "), d.Container)
		}
	}
	if d.Strategy != StrategySignal && d.Strategy != StrategyEvict {
		errs.Addf("decommission.strategy", "must be signal or evict, got %q", d.Strategy)
	}
	if _, err := parseSignal(d.Signal); err != nil {
		errs.Addf("decommission.signal", "%v", err)
	}
	if d.Deadline < time.Second {
		errs.Addf("decommission.deadline", "must be >= 1s, got %s", d.Deadline)
	}
	if d.DeadlineMargin < 0 {
		errs.Addf("decommission.deadlineMargin", "must be >= 0s, got %s", d.DeadlineMargin)
	}
	if d.Fallback != FallbackNone && d.Fallback != FallbackEvict {
		errs.Addf("decommission.fallback", "must be none or evict, got %q", d.Fallback)
	}
	if c.Containerd.Socket == "" && d.Strategy == StrategySignal {
		errs.Addf("containerd.socket", "must be set for the signal strategy")
	}
	if c.Containerd.Namespace == "" {
		errs.Addf("containerd.namespace", "must be set (CRI's is k8s.io)")
	}
	return errs.Err()
}

// action returns the policy for a kind.
func (p *PolicyConfig) action(kind string) string {
	switch kind {
	case KindSpot:
		return p.SpotInterruption
	case KindRebalance:
		return p.RebalanceRecommendation
	case KindMaintenance:
		return p.ScheduledMaintenance
	case KindASG:
		return p.ASGTermination
	case KindDisruption:
		return p.Disruption
	}
	return ActionIgnore
}

// parseSignal accepts "SIGPWR", "PWR" or a number.
func parseSignal(s string) (unix.Signal, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && n > 0 && n < 65 && fmt.Sprint(n) == s {
		return unix.Signal(n), nil
	}
	return 0, fmt.Errorf("must be a signal name like SIGPWR (Spark's spark.executor.decommission.signal), got %q", s)
}
