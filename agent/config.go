package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

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
	atLeast := func(path string, d, floor time.Duration) {
		if d < floor {
			errs.Addf(path, "must be >= %s, got %s", floor, d)
		}
	}
	// Loops that run on every node all the time get a floor: reloadInterval
	// 1ns burnt 70% of a core.
	atLeast("reloadInterval", c.ReloadInterval, minInterval)
	atLeast("readiness.checkInterval", c.Readiness.CheckInterval, minInterval)
	atLeast("shutdownTimeout", c.ShutdownTimeout, minInterval)
	atLeast("restart.initialBackoff", c.Restart.InitialBackoff, minInterval/10)
	atLeast("restart.maxBackoff", c.Restart.MaxBackoff, minInterval/10)
	atLeast("restart.resetAfter", c.Restart.ResetAfter, minInterval)
	if c.Restart.MaxBackoff < c.Restart.InitialBackoff {
		errs.Addf("restart.maxBackoff", "must be >= restart.initialBackoff (%s), got %s", c.Restart.InitialBackoff, c.Restart.MaxBackoff)
	}
	if c.Readiness.StartupTaint != "" {
		if _, err := ParseTaint(c.Readiness.StartupTaint); err != nil {
			errs.Addf("readiness.startupTaint", "%v", err)
		}
	}
	if l := c.Readiness.ReadyLabel; l != "" {
		if msgs := validation.IsQualifiedName(l); len(msgs) > 0 {
			errs.Addf("readiness.readyLabel", "must be a label key like \"nodeagent.io/ready\", got %q: %s", l, strings.Join(msgs, "; "))
		}
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
	// The API server's own checks, so a bad taint fails here and not at the
	// first patch.
	if msgs := validation.IsQualifiedName(key); len(msgs) > 0 {
		return corev1.Taint{}, fmt.Errorf("taint key %q is not valid: %s", key, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsValidLabelValue(value); len(msgs) > 0 {
		return corev1.Taint{}, fmt.Errorf("taint value %q is not valid: %s", value, strings.Join(msgs, "; "))
	}
	switch e := corev1.TaintEffect(effect); e {
	case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		return corev1.Taint{Key: key, Value: value, Effect: e}, nil
	}
	return corev1.Taint{}, fmt.Errorf("taint effect must be NoSchedule, PreferNoSchedule or NoExecute, got %q", effect)
}

// minInterval is the floor of the agent's intervals; this package's tests
// lower it to run in milliseconds.
var minInterval = time.Second

// parseDocument parses the one YAML document in data and returns its root
// node (zero for an empty file). A file that is not valid YAML, holds a
// second document, or does not end with a newline (a file cut off mid-write;
// a ConfigMap's "|" block keeps the newline) is an error.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("not valid YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, fmt.Errorf("a second YAML document (line %d): the config is one document", next.Line)
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("not valid YAML after the first document: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(bytes.TrimSpace(data)) > 0 && !bytes.HasSuffix(data, []byte("\n")) {
		return nil, errors.New("the file does not end with a newline: cut off mid-write? (a ConfigMap's \"|\" block keeps it, \"|-\" strips it)")
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return doc.Content[0], nil
	}
	return &doc, nil
}

// emptyValue reports a value left empty ("key:" and nothing), as opposed
// to an explicit "{}", "~" or "null".
func emptyValue(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null" && n.Value == ""
}

// lastKeyEmpty reports the key path and line of the file's last key when it
// has an empty value: where a file cut off after "key:" ends.
func lastKeyEmpty(m *yaml.Node, path string) (string, int, bool) {
	for m.Kind == yaml.MappingNode && len(m.Content) >= 2 {
		key, val := m.Content[len(m.Content)-2], m.Content[len(m.Content)-1]
		path = config.JoinPath(path, key.Value)
		if emptyValue(val) {
			return path, key.Line, true
		}
		m = val
	}
	return "", 0, false
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
	root, err := parseDocument(data)
	if err != nil {
		errs.Addf("", "%v", err)
		return nil, errs
	}
	if root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			key, val := root.Content[i].Value, root.Content[i+1]
			switch f, ok := fc.Features[key]; {
			case config.FirstLine(root, i) != 0:
				errs.Addf(key, "duplicate key (line %d; first on line %d)", root.Content[i].Line, config.FirstLine(root, i))
			case (key == "agent" || ok) && emptyValue(val):
				// Cut off after "dnscache:" in a truncated file, the section
				// would mean "all defaults", enabled: false included.
				errs.Addf(key, "section has no keys (line %d): a truncated file? Write \"%s: {}\" to keep every default", root.Content[i].Line, key)
			case key == "agent":
				errs.Add("", config.Decode(val, &fc.Agent, "agent"))
			case ok:
				errs.Add("", config.Decode(val, f, key))
			default:
				errs.Addf(key, "unknown section (line %d); sections are: agent, %s", root.Content[i].Line, strings.Join(names, ", "))
			}
		}
		if n := len(root.Content); n >= 2 && root.Content[n-1].Kind == yaml.MappingNode {
			path, line, ok := lastKeyEmpty(root.Content[n-1], root.Content[n-2].Value)
			if ok {
				errs.Addf(path, "the file ends at this key with no value (line %d): a truncated file? Write ~ to keep its default", line)
			}
		}
	} else if root.Kind == 0 || root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		// An empty or truncated file would be "all defaults": every feature
		// disabled, its host state (the DNS interface) torn down.
		errs.Addf("", "the config has no sections: an empty or truncated file? (`nodeagent config default` prints a full one)")
	} else {
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
