package agent

import (
	"context"
	"fmt"

	"github.com/nodeagent/nodeagent/agent/config"
)

// Config is what every feature section of the config file implements.
// The struct is filled with defaults, decoded strictly, then validated.
type Config interface {
	// Validate returns every problem, as config.Errors with key paths
	// relative to the section ("cache.denialTTL").
	Validate() error
	// IsEnabled reports the section's "enabled" key.
	IsEnabled() bool
}

// Spec tells the agent how to configure and build one feature. Build specs
// with Define; cmd/nodeagent lists them explicitly.
type Spec struct {
	// Name is the feature's config key, log attribute and metric subsystem.
	Name string

	defaults func() Config
	build    func(Config, Deps) (Feature, error)
	disable  func(context.Context, Config, Deps) error
	handover func(next, prev Feature)
}

// Defaults returns a fresh config holding the feature's defaults.
func (s Spec) Defaults() Config { return s.defaults() }

// Define ties a feature's name to its config type and constructor. defaults
// returns a fresh config holding every default; build only validates and
// allocates (no goroutines, no I/O).
func Define[C Config](name string, defaults func() C, build func(cfg C, deps Deps) (Feature, error)) Spec {
	return Spec{
		Name:     name,
		defaults: func() Config { return defaults() },
		build:    func(c Config, d Deps) (Feature, error) { return build(c.(C), d) },
	}
}

// OnDisable adds the host clean-up a feature needs when its section says
// enabled: false, both at start-up and when a reload disables it (e.g.
// removing the DNS interface and rules). It must succeed when there is
// nothing to remove. Cancelling Run never does this; only disabling does.
func OnDisable[C Config](s Spec, fn func(ctx context.Context, cfg C, deps Deps) error) Spec {
	s.disable = func(ctx context.Context, c Config, d Deps) error { return fn(ctx, c.(C), d) }
	return s
}

// Handover makes a reload of the feature's section hitless. Instead of
// stopping the running instance and then starting the new one, the agent
// builds the new instance, calls fn(next, prev) while prev still runs (next
// may take state from prev, e.g. a cache; prev must keep working), starts
// next, waits until it is Ready (ReadyChecker; bounded by
// agent.shutdownTimeout) and only then stops prev. So the two run side by
// side for a moment (e.g. sockets bound with SO_REUSEPORT). next's metrics
// are registered once prev's are unregistered: a scrape in between sees
// prev's.
func Handover[F Feature](s Spec, fn func(next, prev F)) Spec {
	s.handover = func(next, prev Feature) {
		n, ok := next.(F)
		p, ok2 := prev.(F)
		if ok && ok2 {
			fn(n, p)
		}
	}
	return s
}

// Unbuilt reserves a config section for a feature this build does not have
// yet: the section accepts only "enabled: false", so a config written for a
// newer agent fails loudly instead of silently doing nothing.
func Unbuilt(name string) Spec {
	return Define(name, func() *unbuiltConfig { return &unbuiltConfig{name: name} },
		func(*unbuiltConfig, Deps) (Feature, error) {
			return nil, fmt.Errorf("%s: not available in this build", name)
		})
}

type unbuiltConfig struct {
	Enabled bool `yaml:"enabled"`
	name    string
}

func (c *unbuiltConfig) IsEnabled() bool { return c.Enabled }

func (c *unbuiltConfig) Validate() error {
	var errs config.Errors
	if c.Enabled {
		errs.Addf("enabled", "this build of nodeagent has no %s feature yet; set enabled: false", c.name)
	}
	return errs.Err()
}
