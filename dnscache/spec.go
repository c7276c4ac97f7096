package dnscache

import (
	"reflect"

	"github.com/nodeagent/nodeagent/agent"
)

// Spec is the feature as the agent runs it: Teardown when disabled, and a
// reload that keeps answering (agent.Handover): the new instance binds the
// same sockets (SO_REUSEPORT) and serves before the old one stops, and it
// keeps the old one's cache when the change allows (see takeOver).
func Spec() agent.Spec {
	s := agent.Define(Name, DefaultConfig, func(c *Config, d agent.Deps) (agent.Feature, error) { return New(c, d) })
	return agent.Handover(agent.OnDisable(s, Teardown), takeOver)
}

// takeOver gives next, built from a changed config, the cache of prev, the
// instance it replaces, unless the change alters what an answer is: the
// zones and where they are forwarded (clusterDNS, node, zones) or the
// cache's bounds. Both instances share it while they overlap. TTL caps and
// the like apply to the entries cached from then on.
func takeOver(next, prev *Cache) {
	if !cacheCompatible(next.cfg, prev.cfg) {
		next.log.Info("config change alters answers; starting with an empty cache")
		return
	}
	next.st, next.nx = prev.st, prev.nx
	next.log.Info("cache handed over", "entries", prev.st.entries.Load())
}

func cacheCompatible(a, b *Config) bool {
	return a.Cache.MaxEntries == b.Cache.MaxEntries && a.Cache.MaxBytes == b.Cache.MaxBytes &&
		reflect.DeepEqual(a.ClusterDNS, b.ClusterDNS) && reflect.DeepEqual(a.Node, b.Node) && reflect.DeepEqual(a.Zones, b.Zones)
}
