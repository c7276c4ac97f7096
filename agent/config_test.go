package agent

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nodeagent/nodeagent/agent/config"
)

func testSpecs() []Spec {
	return []Spec{testSpec("dnscache", &counters{}), Unbuilt("raid"), Unbuilt("imagewarm")}
}

func TestLoadConfigDefaults(t *testing.T) {
	for name, data := range map[string]string{
		"explicit empty sections": "agent: {}\ndnscache: {}\n",
		"explicit null section":   "agent: ~\n",
		"document marker":         "---\nagent: {}\n",
		"one key":                 "# comment\nagent:\n  reloadInterval: 10s\n",
		"YAML 1.2 capitals":       "dnscache:\n  enabled: True\n",
	} {
		t.Run(name, func(t *testing.T) {
			fc, err := LoadConfig([]byte(data), testSpecs())
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if got := fc.Features["dnscache"].(*testConfig); got.Cache.MaxEntries != 100 || got.Timeout != time.Second {
				t.Errorf("defaults not kept: %+v", got)
			}
			if fc.Agent.ReloadInterval != 10*time.Second {
				t.Errorf("agent defaults not kept: %+v", fc.Agent)
			}
		})
	}
}

func TestLoadConfigOverrides(t *testing.T) {
	fc, err := LoadConfig([]byte(`
agent:
  reloadInterval: 2s
  readiness: {gatingFeatures: [dnscache]}
dnscache:
  cache: {denialTTL: 1m30s}
  zones:
    - name: cluster.local
      upstreams: [10.96.0.10]
  labels: {a: b}
`), testSpecs())
	if err != nil {
		t.Fatal(err)
	}
	c := fc.Features["dnscache"].(*testConfig)
	if c.Cache.DenialTTL != 90*time.Second || c.Cache.MaxEntries != 100 {
		t.Errorf("cache = %+v, want denialTTL 1m30s and maxEntries kept at 100", c.Cache)
	}
	if len(c.Zones) != 1 || c.Zones[0].Upstreams[0] != "10.96.0.10" || c.Labels["a"] != "b" {
		t.Errorf("zones/labels = %+v %+v", c.Zones, c.Labels)
	}
	if fc.Agent.ReloadInterval != 2*time.Second || fc.Agent.ShutdownTimeout != 20*time.Second {
		t.Errorf("agent = %+v", fc.Agent)
	}
}

// Every invalid config names the exact key path of its problem.
func TestLoadConfigInvalid(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // each a substring of one error line: "path: message"
	}{
		{"unknown section", "dnscash:\n  enabled: true\n", []string{"dnscash: unknown section"}},
		{"unknown key", "dnscache:\n  cache:\n    maxEntry: 3\n", []string{"dnscache.cache.maxEntry: unknown key (line 3)"}},
		{"case slip suggests", "dnscache:\n  cache:\n    denialttl: 5s\n", []string{`dnscache.cache.denialttl: unknown key (line 3); did you mean "denialTTL"?`}},
		{"unknown agent key", "agent:\n  reload: 5s\n", []string{"agent.reload: unknown key"}},
		{"duration without unit", "dnscache:\n  timeout: 30\n", []string{`dnscache.timeout: must be a duration with a unit like "30s", got "30"`}},
		{"bad duration", "agent:\n  reloadInterval: soon\n", []string{`agent.reloadInterval: must be a duration with a unit like "30s", got "soon"`}},
		{"zero duration", "dnscache:\n  cache: {denialTTL: 0s}\n", []string{"dnscache.cache.denialTTL: must be > 0s, got 0s"}},
		{"negative agent duration", "agent:\n  shutdownTimeout: -1s\n", []string{"agent.shutdownTimeout: must be >= 1ms, got -1s"}},
		{"string for int", "dnscache:\n  cache: {maxEntries: lots}\n", []string{`dnscache.cache.maxEntries: must be a whole number, got "lots"`}},
		{"string for bool", "dnscache:\n  enabled: sure\n", []string{`dnscache.enabled: must be true or false (unquoted), got "sure"`}},
		// YAML 1.2 booleans only, one rule: yaml.v3 took yes into a bool but refused "true".
		{"YAML 1.1 yes", "dnscache:\n  enabled: yes\n", []string{`dnscache.enabled: must be true or false (unquoted), got "yes" (line 2)`}},
		{"YAML 1.1 off", "dnscache:\n  enabled: off\n", []string{`dnscache.enabled: must be true or false (unquoted), got "off"`}},
		{"quoted true", "dnscache:\n  enabled: \"true\"\n", []string{`dnscache.enabled: must be true or false (unquoted), got "true"`}},
		{"second document", "agent: {}\n---\ndnscache: {}\n", []string{"a second YAML document (line 2): the config is one document"}},
		{"empty file", "", []string{"the config has no sections: an empty or truncated file?"}},
		{"comment only", "# nothing\n", []string{"the config has no sections"}},
		{"null document", "~\n", []string{"the config has no sections"}},
		{"truncated after a section key", "agent:\n  reloadInterval: 10s\ndnscache:\n", []string{`dnscache: section has no keys (line 3): a truncated file? Write "dnscache: {}" to keep every default`}},
		{"empty section before others", "agent:\ndnscache: {}\n", []string{"agent: section has no keys (line 1)"}},
		{"truncated after a nested key", "dnscache:\n  enabled: true\n  cache:\n", []string{"dnscache.cache: the file ends at this key with no value (line 3)"}},
		{"truncated mid-line", "dnscache:\n  enabled: true\n  cache: {maxEntries: 5}", []string{"the file does not end with a newline"}},
		{"label key starts with a dash", "agent:\n  readiness: {readyLabel: -bad-}\n", []string{`agent.readiness.readyLabel: must be a label key like "nodeagent.io/ready", got "-bad-"`}},
		{"taint key starts with a dash", "agent:\n  readiness: {startupTaint: \"-bad-:NoSchedule\"}\n", []string{`agent.readiness.startupTaint: taint key "-bad-" is not valid`}},
		{"taint value", "agent:\n  readiness: {startupTaint: \"a.io/b=-x-:NoSchedule\"}\n", []string{`agent.readiness.startupTaint: taint value "-x-" is not valid`}},
		{"label key too long", "agent:\n  readiness: {readyLabel: a.io/" + strings.Repeat("x", 64) + "}\n", []string{"agent.readiness.readyLabel: must be a label key"}},
		{"scalar for section", "dnscache: 3\n", []string{`dnscache: must be a mapping of keys, got "3"`}},
		{"scalar for list of structs", "dnscache:\n  zones: cluster.local\n", []string{"dnscache.zones: must be a list"}},
		{"unknown key in list item", "dnscache:\n  zones:\n    - name: a\n      upstreams: [x]\n    - nam: b\n", []string{"dnscache.zones[1].nam: unknown key (line 5)"}},
		{"validation in list item", "dnscache:\n  zones:\n    - name: a\n", []string{"dnscache.zones[0].upstreams: must name at least one upstream"}},
		{"out of range", "dnscache:\n  cache: {ratio: 1.5}\n", []string{"dnscache.cache.ratio: must be in [0, 1], got 1.5"}},
		{"bad taint", "agent:\n  readiness: {startupTaint: nodeagent.io/not-ready}\n", []string{`agent.readiness.startupTaint: must be "key[=value]:Effect"`}},
		{"bad taint effect", "agent:\n  readiness: {startupTaint: \"a/b:Never\"}\n", []string{`agent.readiness.startupTaint: taint effect must be NoSchedule, PreferNoSchedule or NoExecute, got "Never"`}},
		{"bad label", "agent:\n  readiness: {readyLabel: \"has space\"}\n", []string{`agent.readiness.readyLabel: must be a label key`}},
		{"unknown gating feature", "agent:\n  readiness: {gatingFeatures: [dnscache, raidd]}\n", []string{`agent.readiness.gatingFeatures[1]: unknown feature "raidd" (known: dnscache, raid, imagewarm)`}},
		{"backoff order", "agent:\n  restart: {initialBackoff: 1m, maxBackoff: 10s}\n", []string{"agent.restart.maxBackoff: must be >= restart.initialBackoff (1m0s), got 10s"}},
		{"events rate", "agent:\n  events: {perMinute: 0}\n", []string{"agent.events.perMinute: must be > 0 when events are enabled, got 0"}},
		{"unbuilt feature enabled", "raid:\n  enabled: true\n", []string{"raid.enabled: this build of nodeagent has no raid feature yet"}},
		{"not a mapping", "- a\n- b\n", []string{"the config must be a mapping of sections (agent, dnscache, raid, imagewarm)"}},
		{"not YAML", "agent: [\n", []string{"not valid YAML"}},
		{"duplicate key", "agent:\n  reloadInterval: 1s\n  reloadInterval: 2s\n", []string{"agent.reloadInterval: duplicate key (line 3; first on line 2)"}},
		{"duplicate section", "agent: {}\nagent: {}\n", []string{"agent: duplicate key (line 2; first on line 1)"}},
		{"every problem reported", "agent:\n  reloadInterval: 0s\ndnscache:\n  cache: {maxEntries: 0, denialTTL: 0s}\n", []string{
			"agent.reloadInterval: must be >= 1ms", "dnscache.cache.maxEntries: must be > 0", "dnscache.cache.denialTTL: must be > 0s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := LoadConfig([]byte(tc.yaml), testSpecs())
			if err == nil {
				t.Fatalf("LoadConfig accepted it: %+v", fc)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			var list config.Errors
			if !errors.As(err, &list) {
				t.Errorf("error is %T, want config.Errors", err)
			}
		})
	}
}

func TestParseTaint(t *testing.T) {
	tt, err := ParseTaint("nodeagent.io/not-ready=true:NoExecute")
	if err != nil || tt.Key != "nodeagent.io/not-ready" || tt.Value != "true" || tt.Effect != "NoExecute" {
		t.Fatalf("ParseTaint = %+v, %v", tt, err)
	}
}

// The agent's loops run on every node all the time: their intervals have a
// floor (reloadInterval: 1ns burnt 70% of a core).
func TestLoadConfigIntervalFloors(t *testing.T) {
	defer func(m time.Duration) { minInterval = m }(minInterval)
	minInterval = time.Second
	for _, tc := range []struct{ yaml, want string }{
		{"agent:\n  reloadInterval: 1ns\n", "agent.reloadInterval: must be >= 1s, got 1ns"},
		{"agent:\n  readiness: {checkInterval: 10ms}\n", "agent.readiness.checkInterval: must be >= 1s, got 10ms"},
		{"agent:\n  restart: {initialBackoff: 1ms}\n", "agent.restart.initialBackoff: must be >= 100ms, got 1ms"},
		{"agent:\n  shutdownTimeout: 500ms\n", "agent.shutdownTimeout: must be >= 1s, got 500ms"},
	} {
		_, err := LoadConfig([]byte(tc.yaml), testSpecs())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := LoadConfig([]byte("agent:\n  reloadInterval: 1s\n  readiness: {checkInterval: 1s}\n"), testSpecs()); err != nil {
		t.Errorf("the floor itself is allowed: %v", err)
	}
}

// A file wrong throughout still reads as a short message: the list stops
// at config.MaxListed and says how many more there are.
func TestLoadConfigErrorListCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("dnscache:\n")
	for i := range config.MaxListed + 7 {
		fmt.Fprintf(&b, "  bogus%d: 1\n", i)
	}
	_, err := LoadConfig([]byte(b.String()), testSpecs())
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != config.MaxListed+1 || lines[len(lines)-1] != "...and 7 more" {
		t.Errorf("%d lines, last %q; want %d problems then \"...and 7 more\"", len(lines), lines[len(lines)-1], config.MaxListed)
	}
	var list config.Errors
	if errors.As(err, &list); len(list) != config.MaxListed+7 {
		t.Errorf("the list itself holds %d problems, want all %d", len(list), config.MaxListed+7)
	}
}
