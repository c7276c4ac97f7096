package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/deploy"
	"github.com/nodeagent/nodeagent/raid"
)

// The DaemonSet's paths: `kubectl exec ds/nodeagent -- nodeagent raid status`
// finds the config and the host root without flags.
const (
	podConfig   = "/etc/nodeagent/config.yaml"
	podHostRoot = "/host"
)

// raidCmd is `nodeagent raid status|ensure`: the same discovery, decision
// and actions as the agent's raid feature, for an SRE.
func raidCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	usage := "usage: nodeagent raid status|ensure [--config FILE] [--host-root DIR] [--json]"
	if len(args) == 0 || (args[0] != "status" && args[0] != "ensure") {
		fmt.Fprintln(stderr, usage)
		return exitUsage
	}
	fs := flag.NewFlagSet("raid "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", existing(podConfig, podConfig), "config file (default: "+podConfig+" if present, else the built-in default)")
	hostRoot := fs.String("host-root", existing(podHostRoot+"/proc/1", podHostRoot, "/"), "where the host's / is (default: /host if present, else /)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	data := deploy.DefaultConfig
	if *configPath != "" {
		var err error
		if data, err = os.ReadFile(*configPath); err != nil {
			fmt.Fprintf(stderr, "nodeagent: %v\n", err)
			return exitUsage
		}
	}
	fc, err := agent.LoadConfig(data, features())
	if err != nil {
		fmt.Fprintf(stderr, "nodeagent: config is invalid:\n%v\n", err)
		return exitUsage
	}
	cfg := fc.Features[raid.Name].(*raid.Config)
	if args[0] == "ensure" && !cfg.Enabled {
		fmt.Fprintf(stderr, "nodeagent: raid is not enabled in the config (%s); ensure changes nothing (status works)\n", orBuiltIn(*configPath))
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f, err := raid.New(cfg, agent.Deps{Log: log, Host: hostpath.New(*hostRoot), Exec: hostexec.Exec{}})
	if err != nil {
		fmt.Fprintf(stderr, "nodeagent: %v\n", err)
		return exitUsage
	}
	var rep *raid.Report
	if args[0] == "ensure" {
		rep, err = f.Ensure(ctx)
	} else {
		rep, err = f.Plan(ctx)
	}
	if rep != nil {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
		} else {
			raid.WriteStatus(stdout, cfg, rep)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "nodeagent raid %s: %v\n", args[0], err)
		return exitRuntime
	}
	if !rep.Ready {
		return 1
	}
	return 0
}

// existing returns value if path exists, else def (or "").
func existing(path, value string, def ...string) string {
	if _, err := os.Stat(path); err == nil {
		return value
	}
	if len(def) > 0 {
		return def[0]
	}
	return ""
}

func orBuiltIn(p string) string {
	if p == "" {
		return "the built-in default"
	}
	return p
}
