package dnscache

import (
	"testing"

	"github.com/nodeagent/nodeagent/agent/featuretest"
)

// TestShippedDefaults: the dnscache section of the chart's default config
// decodes to DefaultConfig() (the agent's own test checks every section; this
// one runs without the agent).
func TestShippedDefaults(t *testing.T) {
	t.Parallel()
	got := DefaultConfig()
	got.Cache.MaxEntries = -1 // must be overwritten by the file
	featuretest.ShippedDefaults(t, "../deploy/helm/nodeagent/files/config.yaml", "dnscache", got, DefaultConfig())
}
