// Command dnscached runs the dnscache feature alone, outside the agent: for
// the benchmark (hack/bench.sh) and for trying a config by hand.
//
//	dnscached -config dnscache.yaml   # the dnscache section of the agent config
//
// SIGTERM or SIGINT stops serving gracefully and leaves the interface and
// rules in place, as the agent does on a restart; -teardown removes them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/config"
	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/dnscache"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dnscached:", err)
		os.Exit(1)
	}
}

func run() error {
	cfgPath := flag.String("config", "", "YAML file holding the dnscache section (defaults apply to missing keys)")
	hostRoot := flag.String("host-root", "/", "where the host's / is mounted")
	teardown := flag.Bool("teardown", false, "remove the interface and rules, then exit")
	verbose := flag.Bool("v", false, "debug logs")
	flag.Parse()

	cfg := dnscache.DefaultConfig()
	if *cfgPath != "" {
		data, err := os.ReadFile(*cfgPath)
		if err != nil {
			return err
		}
		var node yaml.Node
		if err := yaml.Unmarshal(data, &node); err != nil {
			return err
		}
		if err := config.Decode(&node, cfg, ""); err != nil {
			return err
		}
	}
	cfg.Enabled = true
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	deps := agent.Deps{
		Log:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("feature", dnscache.Name),
		Metrics: prometheus.NewRegistry(),
		Host:    hostpath.New(*hostRoot),
		Exec:    hostexec.Exec{},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *teardown {
		return dnscache.Teardown(ctx, cfg, deps)
	}
	c, err := dnscache.New(cfg, deps)
	if err != nil {
		return err
	}
	if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
