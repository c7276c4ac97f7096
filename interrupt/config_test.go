package interrupt

import (
	"strings"
	"testing"

	"github.com/nodeagent/nodeagent/agent/featuretest"
)

// TestShippedDefaults: the chart's interrupt section decodes to DefaultConfig().
func TestShippedDefaults(t *testing.T) {
	t.Parallel()
	scrambled := DefaultConfig()
	scrambled.Taints = nil // must come from the file
	featuretest.ShippedDefaults(t, "../deploy/helm/nodeagent/files/config.yaml", Name, scrambled, DefaultConfig())
	if err := scrambled.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // a key path in the error
	}{
		{"endpoint", func(c *Config) { c.IMDS.Endpoint = "169.254.169.254" }, "imds.endpoint"},
		{"poll", func(c *Config) { c.IMDS.PollInterval = 0 }, "imds.pollInterval"},
		{"taint key", func(c *Config) { c.Taints[1].Key = "not a key" }, "taints[1].key"},
		{"taint twice", func(c *Config) { c.Taints[1].Key = c.Taints[0].Key }, "taints[1].key"},
		{"taint kind", func(c *Config) { c.Taints[0].Kind = "spot" }, "taints[0].kind"},
		{"policy", func(c *Config) { c.Policy.RebalanceRecommendation = "drain" }, "policy.rebalanceRecommendation"},
		{"own taint as trigger", func(c *Config) { c.Decommission.Taint = c.Taints[0].Key }, "decommission.taint"},
		{"empty selector", func(c *Config) { c.Decommission.Selector = "" }, "decommission.selector"},
		{"bad selector", func(c *Config) { c.Decommission.Selector = "spark-role in (" }, "decommission.selector"},
		{"strategy", func(c *Config) { c.Decommission.Strategy = "kill" }, "decommission.strategy"},
		{"signal", func(c *Config) { c.Decommission.Signal = "SIGFOO" }, "decommission.signal"},
		{"deadline", func(c *Config) { c.Decommission.Deadline = 0 }, "decommission.deadline"},
		{"fallback", func(c *Config) { c.Decommission.Fallback = "kill" }, "decommission.fallback"},
		{"namespace", func(c *Config) { c.Containerd.Namespace = "" }, "containerd.namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want a problem at %s", err, tc.want)
			}
		})
	}
	for _, s := range []string{"SIGPWR", "PWR", "sigterm", "30"} {
		if _, err := parseSignal(s); err != nil {
			t.Errorf("parseSignal(%q): %v", s, err)
		}
	}
}
