package imagewarm

import "github.com/nodeagent/nodeagent/agent"

// Spec is the feature as cmd/nodeagent lists it.
func Spec() agent.Spec {
	return agent.Define(Name, DefaultConfig, func(c *Config, d agent.Deps) (agent.Feature, error) { return New(c, d) })
}
