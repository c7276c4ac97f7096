// Command nodeagent is the per-node agent: it runs the features listed in
// features.go under one supervisor, configured by one file.
//
//	nodeagent [flags]                 run the agent
//	nodeagent config validate FILE    check a config file; exit 1 naming every bad key
//	nodeagent config default          print the built-in default config
//	nodeagent probe healthz|readyz    ask the agent in this pod (the DaemonSet's exec probes)
//	nodeagent raid status|ensure      the raid feature's disks, decision, array and mount; ensure acts
//	nodeagent version                 print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/agent/kube"
	"github.com/nodeagent/nodeagent/deploy"
)

// DefaultProbeSocket is where the DaemonSet's agent serves its probes.
const DefaultProbeSocket = "/run/nodeagent/probe.sock"

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// exit codes
const (
	exitRuntime = 1 // the agent failed while running
	exitUsage   = 2 // bad flags or config
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "config":
			return configCmd(args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, versionString())
			return 0
		case "probe":
			return probeCmd(ctx, args[1:], stderr)
		case "raid":
			return raidCmd(ctx, args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("nodeagent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath  = fs.String("config", "", "config file, polled for changes (default: the built-in default config)")
		nodeName    = fs.String("node-name", os.Getenv("NODE_NAME"), "Kubernetes node this agent runs on (default $NODE_NAME, else the hostname)")
		hostRoot    = fs.String("host-root", "/", "where the host's / is mounted (e.g. /host in the DaemonSet)")
		metricsAddr = fs.String("metrics-addr", ":9910", "address for /metrics, /healthz and /readyz (\"\" = off)")
		lastGood    = fs.String("last-good-config", "", "keep the config in force in this file (a host path the agent owns, e.g. /host/var/lib/nodeagent/last-good-config.yaml) and start from it when --config is invalid (\"\" = off)")
		probeSocket = fs.String("probe-socket", "", "unix socket serving /healthz and /readyz to `nodeagent probe` (\"\" = off)")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat   = fs.String("log-format", "json", "json or text")
		kubeconfig  = fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster config; none outside a pod = no Kubernetes)")
		showVersion = fs.Bool("version", false, "print the version and exit")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: nodeagent [flags]\n       nodeagent config validate FILE | config default\n       nodeagent raid status|ensure [--config FILE] [--host-root DIR] [--json]\n       nodeagent version\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nodeagent: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *showVersion {
		fmt.Fprintln(stdout, versionString())
		return 0
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "nodeagent: %v\n", err)
		return exitUsage
	}
	if *nodeName == "" {
		*nodeName, _ = os.Hostname()
	}
	// client-go (the Node watch's reflector) logs through klog: into ours.
	klog.SetSlogLogger(log.With("component", "client-go"))

	restCfg, err := kube.RESTConfig(*kubeconfig)
	if err != nil {
		fmt.Fprintf(stderr, "nodeagent: --kubeconfig: %v\n", err)
		return exitUsage
	}
	var kc *kube.Client
	if restCfg != nil {
		if kc, err = kube.New(restCfg, *nodeName, log.With("component", "kube")); err != nil {
			fmt.Fprintf(stderr, "nodeagent: kubernetes client: %v\n", err)
			return exitUsage
		}
	}

	a, err := agent.New(agent.Options{
		ConfigPath:    *configPath,
		DefaultConfig: deploy.DefaultConfig,
		Specs:         features(),
		NodeName:      *nodeName,
		Host:          hostpath.New(*hostRoot),
		Exec:          hostexec.Exec{},
		Log:           log,
		MetricsAddr:   *metricsAddr,
		LastGoodPath:  *lastGood,
		ProbeSocket:   *probeSocket,
		Version:       version,
		Kube:          kc,
	})
	if err != nil {
		fmt.Fprintf(stderr, "nodeagent: %v\n", err)
		return exitUsage
	}
	if err := a.Run(ctx); err != nil {
		log.Error("agent failed", "err", err)
		return exitRuntime
	}
	return 0
}

func configCmd(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 1 && args[0] == "default":
		_, _ = stdout.Write(deploy.DefaultConfig)
		return 0
	case len(args) == 2 && args[0] == "validate":
		data, err := os.ReadFile(args[1])
		if err != nil {
			fmt.Fprintf(stderr, "nodeagent: %v\n", err)
			return exitUsage
		}
		fc, err := agent.LoadConfig(data, features())
		if err != nil {
			fmt.Fprintf(stderr, "%s is invalid:\n%v\n", args[1], err)
			return 1
		}
		fmt.Fprintf(stdout, "%s is valid (hash %s)\n", args[1], fc.Hash)
		return 0
	}
	fmt.Fprintln(stderr, "usage: nodeagent config validate FILE | nodeagent config default")
	return exitUsage
}

// probeCmd is the DaemonSet's exec probe: `nodeagent probe readyz`. It asks
// the agent of its own pod over the unix socket in the pod's /run; an HTTP
// probe on the node's port could be answered by the other agent during a
// surge rollout.
func probeCmd(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", DefaultProbeSocket, "the agent's --probe-socket")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if len(args) == 0 || (args[0] != "healthz" && args[0] != "readyz") {
		fmt.Fprintln(stderr, "usage: nodeagent probe healthz|readyz [--socket PATH] [--timeout 3s]")
		return exitUsage
	}
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := agent.Probe(ctx, *socket, "/"+args[0]); err != nil {
		fmt.Fprintf(stderr, "nodeagent probe %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: must be debug, info, warn or error, got %q", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: must be json or text, got %q", format)
}

func versionString() string {
	return fmt.Sprintf("nodeagent %s %s %s/%s", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
