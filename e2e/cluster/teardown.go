package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func runStdin(ctx context.Context, timeout time.Duration, stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// hostNetworkUp creates the dummy interface holding the node address and
// the kubernetes service IP, blackholes the rest of the service range,
// DNATs the kubernetes service to the API server on loopback, and adds a
// guard that drops anything the pod subnet sends outside itself.
func (c *Cluster) hostNetworkUp(ctx context.Context) error {
	steps := [][]string{
		// No dummy module in some kernels: an empty bridge does the same job.
		{"ip", "link", "add", dummyIf, "type", "bridge"},
		{"ip", "addr", "add", c.NodeIP + "/32", "dev", dummyIf},
		{"ip", "addr", "add", kubernetesSvcIP + "/32", "dev", dummyIf},
		{"ip", "link", "set", dummyIf, "up"},
		{"ip", "route", "add", "blackhole", DefaultServiceCIDR},
	}
	c.hostNetUp = true
	for _, s := range steps {
		if _, err := run(ctx, 30*time.Second, s[0], s[1:]...); err != nil {
			return err
		}
	}
	// Like systemd on a real node: / shared, so that mount propagation into
	// and out of pods works. Teardown makes it private again.
	shared, err := rootIsShared()
	if err != nil {
		return err
	}
	if !shared {
		c.host.MadeRootShared = true
		if err := c.host.save(c.Dir); err != nil {
			return err
		}
		if _, err := run(ctx, 30*time.Second, "mount", "--make-rshared", "/"); err != nil {
			return err
		}
	}
	rules := [][]string{
		{"-t", "nat", "-N", serviceNAT},
		{"-t", "nat", "-A", serviceNAT, "-d", kubernetesSvcIP + "/32", "-p", "tcp", "--dport", "443",
			"-j", "DNAT", "--to-destination", "127.0.0.1:" + strconv.Itoa(c.apiPort)},
		{"-t", "nat", "-I", "OUTPUT", "-j", serviceNAT},
		{"-t", "filter", "-N", guardChain},
		{"-t", "filter", "-A", guardChain, "-s", c.PodCIDR, "!", "-d", c.PodCIDR, "-j", "DROP"},
		{"-t", "filter", "-I", "FORWARD", "-j", guardChain},
	}
	for _, a := range rules {
		if _, err := run(ctx, 30*time.Second, "iptables", append([]string{"-w"}, a...)...); err != nil {
			return err
		}
	}
	return nil
}

// teardown stops everything Start started and removes every trace of it
// from the host. It runs even when the test failed or Start did not finish.
func (c *Cluster) teardown() {
	t := c.t
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if t.Failed() {
		for _, p := range c.procs {
			t.Logf("---- tail of %s (%s) ----\n%s", p.name, p.logPath, tail(p.logPath, 6000))
		}
	}
	var errs []error
	byName := map[string]*proc{}
	for _, p := range c.procs {
		byName[p.name] = p
	}
	stop := func(name string, grace time.Duration) {
		if p := byName[name]; p != nil {
			p.stop(grace)
		}
	}
	// Kubelet first, so it does not restart what we kill next; then every
	// container (processes in the pod cgroups) and the containerd shims,
	// which run in their own sessions.
	stop("kubelet", 10*time.Second)
	killCgroupProcs(cgroupDirs())
	stop("containerd", 10*time.Second)
	for _, pid := range procsMatching(c.Dir + "/") {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	killCgroupProcs(cgroupDirs())
	for _, n := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd", "registry"} {
		stop(n, 10*time.Second)
	}
	// Anything still referring to our directory (a shim that raced us).
	deadline := time.Now().Add(15 * time.Second)
	for {
		pids := procsMatching(c.Dir + "/")
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("processes still running: %v", pids))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	if err := unmountBelow(c.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(cgroupDirs(), 30*time.Second); err != nil {
		errs = append(errs, err)
	}

	// Networking: the kubelet's KUBE-* chains, CNI-* chains, ours; then
	// conntrack entries for our addresses; then the interfaces.
	if err := removeChains(ctx, "iptables", "KUBE-", "CNI-", guardChain); err != nil {
		errs = append(errs, err)
	}
	if err := removeChains(ctx, "ip6tables", "KUBE-", "CNI-"); err != nil {
		errs = append(errs, err)
	}
	if c.hostNetUp {
		errs = append(errs, deleteConntrack(ctx, c.PodCIDR, c.host.Ports, c.host.ServiceIPs)...)
		errs = append(errs, removeHostNetwork(ctx, func(string, ...any) {})...)
	}

	// After the chains are gone: sysctls, / propagation, empty tables, new
	// entries in the host directories.
	errs = append(errs, c.host.restore(ctx)...)
	if os.Getenv("NODEAGENT_E2E_KEEP") == "" {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
	} else {
		t.Logf("NODEAGENT_E2E_KEEP set: kept %s", c.Dir)
	}
	if stale := staleState(ctx); len(stale) > 0 {
		errs = append(errs, fmt.Errorf("left behind: %s", strings.Join(stale, "; ")))
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("cluster teardown incomplete: %v", err)
	}
	t.Logf("PHASE cluster-down: %s", time.Since(start).Round(time.Millisecond))
}
