package main

import (
	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/conntrack"
	"github.com/nodeagent/nodeagent/dnscache"
	"github.com/nodeagent/nodeagent/imagewarm"
	"github.com/nodeagent/nodeagent/interrupt"
	"github.com/nodeagent/nodeagent/raid"
)

// features lists every feature this build has, in start order. A feature
// not built yet keeps its config section reserved with agent.Unbuilt.
func features() []agent.Spec {
	return []agent.Spec{
		raid.Spec(),
		dnscache.Spec(),
		imagewarm.Spec(),
		interrupt.Spec(),
		agent.Define("conntrack", conntrack.DefaultConfig,
			func(c *conntrack.Config, d agent.Deps) (agent.Feature, error) { return conntrack.New(c, d) }),
	}
}
