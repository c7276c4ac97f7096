package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodeagent/nodeagent/agent"
)

// asAgent, set in a child's environment, makes the test binary run the
// agent's main with the arguments after "--": a real second process.
const asAgent = "NODEAGENT_TEST_RUN_AGENT"

func TestMain(m *testing.M) {
	if os.Getenv(asAgent) == "1" {
		args := os.Args[1:]
		for i, a := range args {
			if a == "--" {
				args = args[i+1:]
				break
			}
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		code := run(ctx, args, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

type agentProc struct {
	cmd    *exec.Cmd
	sock   string
	hash   string
	stderr *lockedBuffer
	done   chan error
}

// startAgent runs the agent in a process of its own on addr, with a config
// whose hash tells its /metrics apart.
func startAgent(t *testing.T, addr, name string, perMinute int) *agentProc {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("agent:\n  events: {perMinute: %d}\n", perMinute)
	fc, err := agent.LoadConfig([]byte(cfg), features())
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644))
	p := &agentProc{sock: filepath.Join(dir, "probe.sock"), hash: fc.Hash, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$", "--",
		"--config", filepath.Join(dir, "config.yaml"), "--metrics-addr", addr, "--probe-socket", p.sock,
		"--host-root", dir, "--log-format", "text")
	p.cmd.Env = append(os.Environ(), asAgent+"=1", "KUBERNETES_SERVICE_HOST=")
	p.cmd.Stderr = p.stderr
	must(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.stderr.String())
		}
	})
	return p
}

func (p *agentProc) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return agent.Probe(ctx, p.sock, "/readyz") == nil
}

// scrape asks addr's /metrics over a new connection and returns the config
// hash of the process that answered, or "" when none did.
func scrape(client *http.Client, addr string) string {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, `nodeagent_config_info{hash="`); ok {
			h, _, _ := strings.Cut(rest, `"`)
			return h
		}
	}
	return "?"
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A surge rollout on one node, with two real agent processes: the new one
// turns ready on its probe socket while the old one still answers the
// metrics port, every scrape meanwhile reaches the old one (with
// SO_REUSEPORT the kernel spread them over both, and counters jumped back
// and forth), and once the old one exits the new one takes the port.
func TestSurgeRolloutOneProcessAnswersMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	// New connections each time, as separate scrapes are.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

	old := startAgent(t, addr, "old", 6)
	waitFor(t, "the old agent serving", func() bool { return scrape(client, addr) == old.hash })
	next := startAgent(t, addr, "new", 7)
	waitFor(t, "the new agent ready on its probe socket", next.ready)
	// Ready on the probe socket says nothing about the metrics port: the
	// agent binds that in a goroutine of its own, and its log reaches
	// stderr through exec's copying goroutine. Wait for the line.
	next.waitLog(t, "metrics port held by another process")
	answered := map[string]int{}
	for range 100 {
		answered[scrape(client, addr)]++
	}
	if answered[old.hash] != 100 {
		t.Fatalf("scrapes during the overlap answered by %v (old %s, new %s): want all 100 by the old agent", answered, old.hash, next.hash)
	}

	must(t, old.cmd.Process.Signal(syscall.SIGTERM))
	if err := <-old.done; err != nil {
		t.Fatalf("old agent: %v", err)
	}
	old.done <- nil
	waitFor(t, "the new agent on the port", func() bool { return scrape(client, addr) == next.hash })
	for range 20 {
		if h := scrape(client, addr); h != next.hash {
			t.Fatalf("scrape answered by %q after the takeover, want the new agent %s", h, next.hash)
		}
	}
	if !next.ready() {
		t.Error("the new agent is not ready")
	}
	next.waitLog(t, "metrics port free: bound")
}

// waitLog waits for the agent to write line to its stderr.
func (p *agentProc) waitLog(t *testing.T, line string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the log line %q", line), func() bool { return strings.Contains(p.stderr.String(), line) })
}
