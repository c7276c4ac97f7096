package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/deploy"
)

// The ConfigMap's default config is the Go defaults, key for key: editing one
// without the other fails here.
func TestShippedDefaultConfigEqualsGoDefaults(t *testing.T) {
	fc, err := agent.LoadConfig(deploy.DefaultConfig, features())
	if err != nil {
		t.Fatalf("the shipped default config is invalid:\n%v", err)
	}
	if !reflect.DeepEqual(fc.Agent, agent.DefaultAgentConfig()) {
		t.Errorf("agent section differs from DefaultAgentConfig():\nfile: %+v\nGo:   %+v", fc.Agent, agent.DefaultAgentConfig())
	}
	want := map[string]any{"agent": agent.DefaultAgentConfig()}
	for _, s := range features() {
		want[s.Name] = s.Defaults()
		if !reflect.DeepEqual(fc.Features[s.Name], s.Defaults()) {
			t.Errorf("%s section differs from its defaults:\nfile: %+v\nGo:   %+v", s.Name, fc.Features[s.Name], s.Defaults())
		}
	}
	// Every key of the defaults is written out in the file, so that the
	// ConfigMap documents all of them.
	var fileKeys, goKeys []string
	var fileTree, goTree any
	must(t, yaml.Unmarshal(deploy.DefaultConfig, &fileTree))
	out, err := yaml.Marshal(want)
	must(t, err)
	must(t, yaml.Unmarshal(out, &goTree))
	keyPaths("", fileTree, &fileKeys)
	keyPaths("", goTree, &goKeys)
	for _, k := range goKeys {
		if !slices.Contains(fileKeys, k) {
			t.Errorf("deploy/helm/nodeagent/files/config.yaml does not show key %s with its default", k)
		}
	}
}

func keyPaths(prefix string, v any, into *[]string) {
	m, ok := v.(map[string]any)
	if !ok {
		*into = append(*into, prefix)
		return
	}
	for k, sub := range m {
		keyPaths(strings.TrimPrefix(prefix+"."+k, "."), sub, into)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	must(t, os.WriteFile(good, []byte("agent:\n  reloadInterval: 5s\n"), 0o644))
	must(t, os.WriteFile(bad, []byte("agent:\n  reloadInterval: 5\n"), 0o644))
	unbuilt := filepath.Join(dir, "unbuilt.yaml")
	must(t, os.WriteFile(unbuilt, []byte("raid:\n  enabled: true\n  array: {chunkKiB: 100}\n"), 0o644))

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		out, err string
	}{
		{"version", []string{"--version"}, 0, "nodeagent dev", ""},
		{"version subcommand", []string{"version"}, 0, "nodeagent dev", ""},
		{"config default", []string{"config", "default"}, 0, "reloadInterval: 10s", ""},
		{"config validate good", []string{"config", "validate", good}, 0, "is valid", ""},
		{"config validate bad names every key", []string{"config", "validate", bad}, 1, "",
			"agent.reloadInterval: must be a duration with a unit like \"30s\", got \"5\""},
		{"config validate missing file", []string{"config", "validate", filepath.Join(dir, "nope")}, 2, "", "no such file"},
		{"config usage", []string{"config"}, 2, "", "usage: nodeagent config"},
		{"unknown flag", []string{"--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{"bad log level", []string{"--log-level", "loud"}, 2, "", "--log-level: must be debug, info, warn or error"},
		{"bad log format", []string{"--log-format", "xml"}, 2, "", "--log-format: must be json or text"},
		{"bad config file", []string{"--config", unbuilt, "--metrics-addr", ""}, 2, "", "raid.array.chunkKiB: must be a power of two from 4 to 65536, got 100"},
		{"missing kubeconfig", []string{"--kubeconfig", filepath.Join(dir, "nope")}, 2, "", "--kubeconfig"},
		{"probe without agent", []string{"probe", "readyz", "--socket", filepath.Join(dir, "none.sock")}, 1, "", "nodeagent probe readyz:"},
		{"probe usage", []string{"probe", "alive"}, 2, "", "usage: nodeagent probe"},
		{"stray argument", []string{"run"}, 2, "", `unexpected argument "run"`},
		{"raid status explains", []string{"raid", "status", "--config", "", "--host-root", "../../raid/testdata/no_disks"}, 1,
			`decision: no_disks`, ""},
		{"raid ensure refuses when disabled", []string{"raid", "ensure", "--config", "", "--host-root", "../../raid/testdata/no_disks"}, 1,
			"", "raid is not enabled in the config (the built-in default)"},
		{"raid usage", []string{"raid"}, 2, "", "usage: nodeagent raid status|ensure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.out) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tc.out)
			}
			if !strings.Contains(stderr.String(), tc.err) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.err)
			}
		})
	}
}

// The agent runs on the embedded default config without a cluster and stops
// cleanly when cancelled.
func TestRunsWithoutCluster(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var stderr lockedBuffer
	done := make(chan int)
	sock := filepath.Join(t.TempDir(), "probe.sock")
	go func() {
		done <- run(ctx, []string{"--metrics-addr", "127.0.0.1:0", "--probe-socket", sock, "--log-format", "text"}, &bytes.Buffer{}, &stderr)
	}()
	for !strings.Contains(stderr.String(), "serving metrics") {
		select {
		case code := <-done:
			t.Fatalf("exited %d early:\n%s", code, stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	for _, ep := range []string{"healthz", "readyz"} {
		var perr bytes.Buffer
		if code := run(context.Background(), []string{"probe", ep, "--socket", sock}, &bytes.Buffer{}, &perr); code != 0 {
			t.Errorf("probe %s: exit %d: %s", ep, code, perr.String())
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "no Kubernetes API") {
		t.Errorf("no clear message that Kubernetes is off:\n%s", stderr.String())
	}
}

// lockedBuffer is a bytes.Buffer the agent writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
