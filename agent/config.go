package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodeagent/nodeagent/agent/config"
)

// AgentConfig is the "agent" section: how the host runs its features.
type AgentConfig struct {
	// ReloadInterval is how often the config file is re-read and hashed.
	ReloadInterval time.Duration `yaml:"reloadInterval"`
	// ShutdownTimeout bounds how long features get to stop on SIGTERM.
	ShutdownTimeout time.Duration   `yaml:"shutdownTimeout"`
	Restart         RestartConfig   `yaml:"restart"`
	Readiness       ReadinessConfig `yaml:"readiness"`
	Events          EventsConfig    `yaml:"events"`
}

// RestartConfig is the backoff for restarting a failed feature.
type RestartConfig struct {
	InitialBackoff time.Duration `yaml:"initialBackoff"`
	MaxBackoff     time.Duration `yaml:"maxBackoff"`
	// ResetAfter: a feature that ran this long before failing starts again
	// from InitialBackoff.
	ResetAfter time.Duration `yaml:"resetAfter"`
}

// ReadinessConfig is the node readiness gate.
type ReadinessConfig struct {
	// StartupTaint is removed once every gating feature is ready,
	// written "key:Effect" or "key=value:Effect". Empty disables removal.
	StartupTaint string `yaml:"startupTaint"`
	// ReadyLabel is set to "true" on the Node at the same time. Empty disables it.
	ReadyLabel string `yaml:"readyLabel"`
	// GatingFeatures must all be ready (when enabled) before the node is.
	GatingFeatures []string `yaml:"gatingFeatures"`
	// CheckInterval is how often readiness is evaluated.
	CheckInterval time.Duration `yaml:"checkInterval"`
}

// EventsConfig bounds the Events the agent records on its Node.
type EventsConfig struct {
	Enabled bool `yaml:"enabled"`
	// PerMinute is the sustained rate of Events per reason; Burst the burst.
	PerMinute int `yaml:"perMinute"`
	Burst     int `yaml:"burst"`
}

// DefaultAgentConfig returns the agent section's defaults.
func DefaultAgentConfig() AgentConfig {
	return AgentConfig{
		ReloadInterval:  10 * time.Second,
		ShutdownTimeout: 20 * time.Second,
		Restart: RestartConfig{
			InitialBackoff: time.Second,
			MaxBackoff:     5 * time.Minute,
			ResetAfter:     2 * time.Minute,
		},
		Readiness: ReadinessConfig{
			StartupTaint:   "nodeagent.io/not-ready:NoSchedule",
			ReadyLabel:     "nodeagent.io/ready",
			GatingFeatures: []string{"raid", "dnscache", "imagewarm"},
			CheckInterval:  5 * time.Second,
		},
		Events: EventsConfig{Enabled: true, PerMinute: 6, Burst: 10},
	}
}

// Validate checks the agent section; known lists the feature names.
func (c *AgentConfig) Validate(known []string) error {
	var errs config.Errors
	positive := func(path string, d time.Duration) {
		if d <= 0 {
			errs.Addf(path, "must be > 0s, got %s", d)
		}
	}
	positive("reloadInterval", c.ReloadInterval)
	positive("shutdownTimeout", c.ShutdownTimeout)
	positive("restart.initialBackoff", c.Restart.InitialBackoff)
	positive("restart.maxBackoff", c.Restart.MaxBackoff)
	positive("restart.resetAfter", c.Restart.ResetAfter)
	positive("readiness.checkInterval", c.Readiness.CheckInterval)
	if c.Restart.MaxBackoff < c.Restart.InitialBackoff {
		errs.Addf("restart.maxBackoff", "must be >= restart.initialBackoff (%s), got %s", c.Restart.InitialBackoff, c.Restart.MaxBackoff)
	}
	if c.Readiness.StartupTaint != "" {
		if _, err := ParseTaint(c.Readiness.StartupTaint); err != nil {
			errs.Addf("readiness.startupTaint", "%v", err)
		}
	}
	if l := c.Readiness.ReadyLabel; l != "" && !validLabelKey(l) {
		errs.Addf("readiness.readyLabel", "must be a label key like \"nodeagent.io/ready\", got %q", l)
	}
	for i, name := range c.Readiness.GatingFeatures {
		if !slices.Contains(known, name) {
			errs.Addf(fmt.Sprintf("readiness.gatingFeatures[%d]", i), "unknown feature %q (known: %s)", name, strings.Join(known, ", "))
		}
	}
	if c.Events.Enabled {
		if c.Events.PerMinute <= 0 {
			errs.Addf("events.perMinute", "must be > 0 when events are enabled, got %d", c.Events.PerMinute)
		}
		if c.Events.Burst <= 0 {
			errs.Addf("events.burst", "must be > 0 when events are enabled, got %d", c.Events.Burst)
		}
	}
	return errs.Err()
}

// ParseTaint parses "key[=value]:Effect".
func ParseTaint(s string) (corev1.Taint, error) {
	kv, effect, ok := strings.Cut(s, ":")
	if !ok {
		return corev1.Taint{}, fmt.Errorf("must be \"key[=value]:Effect\", got %q", s)
	}
	key, value, _ := strings.Cut(kv, "=")
	if !validLabelKey(key) {
		return corev1.Taint{}, fmt.Errorf("taint key %q is not a valid key", key)
	}
	switch e := corev1.TaintEffect(effect); e {
	case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		return corev1.Taint{Key: key, Value: value, Effect: e}, nil
	}
	return corev1.Taint{}, fmt.Errorf("taint effect must be NoSchedule, PreferNoSchedule or NoExecute, got %q", effect)
}

// validLabelKey checks the shape of a Kubernetes label or taint key: an
// optional DNS prefix and a name of [A-Za-z0-9._-], at most 63 characters.
func validLabelKey(k string) bool {
	prefix, name, ok := strings.Cut(k, "/")
	if !ok {
		name, prefix = prefix, ""
	}
	if len(name) == 0 || len(name) > 63 || len(prefix) > 253 || (ok && prefix == "") {
		return false
	}
	for _, r := range name + prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// FileConfig is one loaded, validated config file.
type FileConfig struct {
	Agent AgentConfig
	// Features holds each spec's section, by name, defaults filled in.
	Features map[string]Config
	// Hash is the sha256 of the file's bytes, hex; it labels
	// nodeagent_config_info.
	Hash string
}

// LoadConfig decodes and validates data against the specs. It returns every
// problem with its key path, or the config.
func LoadConfig(data []byte, specs []Spec) (*FileConfig, error) {
	sum := sha256.Sum256(data)
	fc := &FileConfig{
		Agent:    DefaultAgentConfig(),
		Features: make(map[string]Config, len(specs)),
		Hash:     hex.EncodeToString(sum[:])[:16],
	}
	names := make([]string, 0, len(specs))
	for _, s := range specs {
		fc.Features[s.Name] = s.defaults()
		names = append(names, s.Name)
	}

	var errs config.Errors
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		errs.Addf("", "not valid YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil, errs
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			key, val := root.Content[i].Value, root.Content[i+1]
			switch f, ok := fc.Features[key]; {
			case config.FirstLine(root, i) != 0:
				errs.Addf(key, "duplicate key (line %d; first on line %d)", root.Content[i].Line, config.FirstLine(root, i))
			case key == "agent":
				errs.Add("", config.Decode(val, &fc.Agent, "agent"))
			case ok:
				errs.Add("", config.Decode(val, f, key))
			default:
				errs.Addf(key, "unknown section (line %d); sections are: agent, %s", root.Content[i].Line, strings.Join(names, ", "))
			}
		}
	} else if root.Kind != 0 && !(root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
		errs.Addf("", "the config must be a mapping of sections (agent, %s)", strings.Join(names, ", "))
	}
	if len(errs) > 0 {
		return nil, errs // type errors first: validating half-decoded values misleads
	}
	errs.Add("agent", fc.Agent.Validate(names))
	for _, s := range specs {
		errs.Add(s.Name, fc.Features[s.Name].Validate())
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return fc, nil
}
