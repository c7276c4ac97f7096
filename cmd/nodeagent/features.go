package main

import "github.com/nodeagent/nodeagent/agent"

// features lists every feature this build has, in start order. A feature
// not built yet keeps its config section reserved with agent.Unbuilt.
func features() []agent.Spec {
	return []agent.Spec{
		agent.Unbuilt("raid"),
		agent.Unbuilt("dnscache"),
		agent.Unbuilt("imagewarm"),
		agent.Unbuilt("interrupt"),
		agent.Unbuilt("conntrack"),
	}
}
