package interrupt

import "github.com/nodeagent/nodeagent/agent"

// Spec is how cmd/nodeagent lists the feature.
func Spec() agent.Spec {
	return agent.Define(Name, DefaultConfig, func(c *Config, d agent.Deps) (agent.Feature, error) { return New(c, d) })
}
