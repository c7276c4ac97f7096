package raid

import "github.com/nodeagent/nodeagent/agent"

// Spec is the feature as the agent runs it. Disabling it removes nothing:
// the array and the mount hold data pods may still use.
func Spec() agent.Spec {
	return agent.Define(Name, DefaultConfig, func(c *Config, d agent.Deps) (agent.Feature, error) { return New(c, d) })
}
