package agent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeagent/nodeagent/agent/config"
)

// testConfig is a feature section with the shapes real features use.
type testConfig struct {
	Enabled bool              `yaml:"enabled"`
	Listen  []string          `yaml:"listen"`
	Cache   testCache         `yaml:"cache"`
	Zones   []testZone        `yaml:"zones"`
	Labels  map[string]string `yaml:"labels"`
	Timeout time.Duration     `yaml:"timeout"`
	// FailRuns makes Run fail this many times before it serves.
	FailRuns int  `yaml:"failRuns"`
	NotReady bool `yaml:"notReady"`
	// Drain is how long Run takes to return once cancelled.
	Drain time.Duration `yaml:"drain"`
}

type testCache struct {
	MaxEntries int           `yaml:"maxEntries"`
	DenialTTL  time.Duration `yaml:"denialTTL"`
	Ratio      float64       `yaml:"ratio"`
}

type testZone struct {
	Name      string   `yaml:"name"`
	Upstreams []string `yaml:"upstreams"`
}

func defaultTestConfig() *testConfig {
	return &testConfig{
		Enabled: true,
		Listen:  []string{"169.254.20.10"},
		Cache:   testCache{MaxEntries: 100, DenialTTL: 5 * time.Second, Ratio: 0.5},
		Timeout: time.Second,
	}
}

func (c *testConfig) IsEnabled() bool { return c.Enabled }

func (c *testConfig) Validate() error {
	var errs config.Errors
	if c.Cache.MaxEntries <= 0 {
		errs.Addf("cache.maxEntries", "must be > 0, got %d", c.Cache.MaxEntries)
	}
	if c.Cache.DenialTTL <= 0 {
		errs.Addf("cache.denialTTL", "must be > 0s, got %s", c.Cache.DenialTTL)
	}
	if c.Cache.Ratio < 0 || c.Cache.Ratio > 1 {
		errs.Addf("cache.ratio", "must be in [0, 1], got %g", c.Cache.Ratio)
	}
	for i, z := range c.Zones {
		if len(z.Upstreams) == 0 {
			errs.Addf(fmt.Sprintf("zones[%d].upstreams", i), "must name at least one upstream")
		}
	}
	return errs.Err()
}

// testFeature counts its runs, fails FailRuns times, then serves until cancelled.
type testFeature struct {
	name  string
	cfg   *testConfig
	runs  *atomic.Int32
	built *atomic.Int32
	m     prometheus.Counter
	c     *counters
}

func (f *testFeature) Name() string { return f.name }

func (f *testFeature) Run(ctx context.Context) error {
	n := f.runs.Add(1)
	f.m.Inc()
	if int(n) <= f.cfg.FailRuns {
		return errors.New("disk vanished")
	}
	<-ctx.Done()
	f.c.cancelled.Add(1)
	time.Sleep(f.cfg.Drain) // draining: connections, in-flight work
	f.c.drained.Add(1)
	return nil
}

func (f *testFeature) Ready() error {
	if f.cfg.NotReady {
		return errors.New("array not assembled")
	}
	return nil
}

// counters records runs, builds and drains per feature name, shared with the test.
type counters struct{ runs, built, cancelled, drained atomic.Int32 }

func testSpec(name string, c *counters) Spec {
	return Define(name, defaultTestConfig, func(cfg *testConfig, d Deps) (Feature, error) {
		c.built.Add(1)
		m := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "nodeagent", Subsystem: name, Name: "runs_total", Help: "Runs."})
		d.Metrics.MustRegister(m) // registered again on every rebuild: the agent must retire the old one
		return &testFeature{name: name, cfg: cfg, runs: &c.runs, built: &c.built, m: m, c: c}, nil
	})
}
