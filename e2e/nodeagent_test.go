//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodeagent/nodeagent/e2e/cluster"
	"github.com/nodeagent/nodeagent/e2e/image"
)

const (
	agentNamespace = "kube-system"
	agentRelease   = "nodeagent"
	// The chart's full name for release "nodeagent".
	agentName = "nodeagent"
	// The reportingController of the agent's Events.
	agentController = "nodeagent"
)

// repoDir is the repository root (the parent of the e2e module).
func repoDir() string { return filepath.Dir(cluster.ModuleDir()) }

func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h := filepath.Join(cluster.CacheDir(), "bin", "helm")
	if _, err := os.Stat(h); err != nil {
		t.Fatalf("helm not found at %s: run e2e/hack/prereqs.sh", h)
	}
	return h
}

// TestNodeagentDaemonSetAsRoot installs nodeagent the way a user would
// (the Helm chart rendered and applied server-side, the image built from
// cmd/nodeagent and the Debian packages of deploy/) and checks what the
// issue asks for: the DaemonSet turns Ready, the agent removes the startup
// taint and labels the Node, /metrics answers on the node, its Events are
// readable, a ConfigMap change is applied without a restart, and a broken
// one is rejected with a Warning Event while the last good config stays.
func TestNodeagentDaemonSetAsRoot(t *testing.T) {
	if _, err := os.Stat(filepath.Join(repoDir(), "cmd", "nodeagent")); err != nil {
		t.Skip("cmd/nodeagent does not exist yet")
	}
	if _, err := os.Stat(filepath.Join(repoDir(), "deploy", "helm", "nodeagent")); err != nil {
		t.Skip("deploy/helm/nodeagent does not exist yet")
	}
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	start := time.Now()
	img, err := image.Nodeagent(ctx, image.NodeagentOptions{
		RepoDir:  repoDir(),
		CacheDir: cluster.CacheDir(),
		WorkDir:  t.TempDir(),
		Logf:     t.Logf,
	})
	if err != nil {
		t.Fatalf("build the nodeagent image: %v", err)
	}
	repo := c.Registry + "/nodeagent"
	ref, err := image.Push(ctx, img, repo+":e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PHASE agent-image: %s (%s)", time.Since(start).Round(time.Millisecond), ref)

	t.Run("ImageHasHostTools", func(t *testing.T) {
		// The tools the features exec must run inside the image: this
		// proves the Debian layer carries their libraries.
		script := "set -e; nodeagent version; mdadm --version; mkfs.xfs -V; mkfs.ext4 -V; nft --version; " +
			"iptables --version; iptables-legacy --version; conntrack --version; mount --version; " +
			"findmnt --version; blkid --version; fusermount3 --version; s3fs --version; test -s /etc/ssl/certs/ca-certificates.crt; echo TOOLS-OK"
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "agent-tools", Namespace: "default"},
			Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Tolerations:   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{
					Name: "tools", Image: ref,
					Command: []string{"/bin/sh", "-c", script},
				}},
			},
		}
		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var got *corev1.Pod
		err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err = c.Client.CoreV1().Pods("default").Get(ctx, "agent-tools", metav1.GetOptions{})
			return err == nil && (got.Status.Phase == corev1.PodSucceeded || got.Status.Phase == corev1.PodFailed), nil
		})
		log, _ := c.PodLog("default", "agent-tools", "tools")
		if err != nil || got.Status.Phase != corev1.PodSucceeded || !strings.Contains(log, "TOOLS-OK") {
			t.Fatalf("tools pod: err=%v phase=%v\n%s", err, statusOf(got), log)
		}
		t.Logf("tools in the image:\n%s", log)
		_ = c.Client.CoreV1().Pods("default").Delete(ctx, "agent-tools", metav1.DeleteOptions{})
	})

	t.Run("ManifestsServerSideDryRun", func(t *testing.T) {
		out, err := c.Kubectl(ctx, "", "apply", "--server-side", "--dry-run=server", "--field-manager=e2e",
			"-f", filepath.Join(repoDir(), "deploy", "manifests"))
		if err != nil {
			t.Fatalf("server-side dry run of deploy/manifests: %v", err)
		}
		t.Logf("dry run:\n%s", out)

		// The chart in a namespace of its own, as many users install it.
		const ns = "nodeagent-dryrun"
		if _, err := c.Kubectl(ctx, "", "create", "namespace", ns); err != nil {
			t.Fatal(err)
		}
		rendered, err := exec.CommandContext(ctx, helmBin(t), "template", agentRelease,
			filepath.Join(repoDir(), "deploy", "helm", "nodeagent"), "--namespace", ns).Output()
		if err != nil {
			t.Fatalf("helm template: %v %s", err, stderrOf(err))
		}
		if out, err := c.Kubectl(ctx, string(rendered), "apply", "--server-side", "--dry-run=server", "--field-manager=e2e", "-f", "-"); err != nil {
			t.Errorf("server-side dry run of the chart in namespace %s: %v", ns, err)
		} else {
			t.Logf("dry run in %s:\n%s", ns, out)
		}
	})

	// Install: helm template | kubectl apply --server-side.
	start = time.Now()
	agentRepo = repo
	applyChart(ctx, t, c)
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := agentLog(c); err == nil {
				t.Logf("---- agent log ----\n%s", lastBytes(log, 8000))
			}
			if out, err := c.Kubectl(context.Background(), "", "get", "events", "-A"); err == nil {
				t.Logf("---- events ----\n%s", out)
			}
		}
	})

	pod := waitRollout(ctx, t, c)
	t.Logf("PHASE agent-ready: %s", time.Since(start).Round(time.Millisecond))

	t.Run("StartupTaintRemovedAndLabelSet", func(t *testing.T) {
		err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			return !hasTaint(n, "nodeagent.io/not-ready", corev1.TaintEffectNoSchedule) &&
				n.Labels["nodeagent.io/ready"] == "true", nil
		})
		if err != nil {
			n, _ := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
			t.Fatalf("node %s: taints %v labels %v", c.NodeName, n.Spec.Taints, n.Labels)
		}
		waitEvent(ctx, t, c, "NodeReady", corev1.EventTypeNormal, time.Minute)
	})

	t.Run("MetricsAnswerOnTheNode", func(t *testing.T) {
		body := scrape(ctx, t)
		for _, want := range []string{"nodeagent_build_info", "nodeagent_config_info", "nodeagent_node_ready 1"} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics has no %q", want)
			}
		}
		for _, path := range []string{"/healthz", "/readyz"} {
			if code := get(ctx, t, path); code != http.StatusOK {
				t.Errorf("GET %s = %d, want 200", path, code)
			}
		}
	})

	t.Run("EventsReadable", func(t *testing.T) {
		// Any Event the agent recorded on its Node, read back through
		// events.k8s.io/v1.
		waitEvent(ctx, t, c, "", "", 2*time.Minute)
	})

	t.Run("RBAC", func(t *testing.T) {
		cr, err := c.Client.RbacV1().ClusterRoles().Get(ctx, agentName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var rules []string
		for _, r := range cr.Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					rules = append(rules, fmt.Sprintf("%s/%s: %s", orCore(g), res, strings.Join(r.Verbs, ",")))
				}
			}
		}
		sort.Strings(rules)
		t.Logf("ClusterRole %s grants:\n  %s", agentName, strings.Join(rules, "\n  "))
		for _, r := range cr.Rules {
			for _, v := range r.Verbs {
				if v == "*" || v == "delete" || v == "deletecollection" || v == "escalate" || v == "bind" || v == "impersonate" {
					t.Errorf("ClusterRole grants %q on %v", v, r.Resources)
				}
			}
			for _, res := range r.Resources {
				if res == "*" || res == "secrets" {
					t.Errorf("ClusterRole grants %v on %q", r.Verbs, res)
				}
			}
		}
		// What the agent's ServiceAccount can do, as the API server sees it.
		sa := "system:serviceaccount:" + agentNamespace + ":" + agentName
		if out, err := c.Kubectl(ctx, "", "auth", "can-i", "--list", "--as="+sa); err != nil {
			t.Errorf("auth can-i --list: %v", err)
		} else {
			t.Logf("kubectl auth can-i --list --as=%s:\n%s", sa, out)
		}
		for _, q := range [][]string{
			{"get", "secrets", "-A"}, {"list", "configmaps", "-A"}, {"delete", "nodes"}, {"delete", "pods", "-A"},
			{"create", "pods", "-A"}, {"update", "nodes"}, {"create", "events", "-n", "default"},
			// dnscache is off: not even its one Service.
			{"watch", "services/kube-dns-upstream", "-n", "kube-system"},
		} {
			out, _ := c.Kubectl(ctx, "", append([]string{"auth", "can-i", "--as=" + sa}, q...)...)
			if a := lastLine(out); a != "no" {
				t.Errorf("the agent can %v: %q, want no", q, a)
			}
		}
		// What the agent's behaviour in this test needs (taint, label,
		// condition, Events); anything more is a feature's business.
		for _, q := range [][]string{
			{"get", "nodes"}, {"patch", "nodes"}, {"patch", "nodes/status"}, {"create", "events.events.k8s.io", "-n", "default"},
		} {
			out, _ := c.Kubectl(ctx, "", append([]string{"auth", "can-i", "--as=" + sa}, q...)...)
			if a := lastLine(out); a != "yes" {
				t.Errorf("the agent cannot %v: %q, want yes", q, a)
			}
		}
	})

	t.Run("OwnNodeOnly", func(t *testing.T) {
		testOwnNodeOnly(ctx, t, c, pod)
	})

	// Fleet scale: the agent's requests at idle, counted by the API server
	// itself (its audit log), over a window. Target: <= 60 per node per hour.
	t.Run("APIRequestsPerHourAtIdle", func(t *testing.T) {
		window := 3 * time.Minute
		if v := os.Getenv("E2E_IDLE_WINDOW"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("E2E_IDLE_WINDOW: %v", err)
			}
			window = d
		}
		user := "system:serviceaccount:" + agentNamespace + ":" + agentName
		from := time.Now()
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(window): // a measurement window, not a wait for an event
		}
		to := time.Now()
		reqs, err := c.AuditRequests(user, from, to)
		if err != nil {
			t.Fatal(err)
		}
		// The audit log does see the agent: its start (list, watch, patches).
		if all, err := c.AuditRequests(user, time.Time{}, to); err != nil || len(all) == 0 {
			t.Fatalf("the audit log has no request of %s at all (%v): the count below would mean nothing", user, err)
		} else {
			t.Logf("all requests of %s since the cluster started: %d: %s", user, len(all), cluster.CountByKey(all))
		}
		perHour := float64(len(reqs)) * float64(time.Hour) / float64(to.Sub(from))
		t.Logf("IDLE-API-REQUESTS: %d requests of %s in %s (API server audit log; a watch open across the window counts) = %.0f per node per hour (target <= 60): %s",
			len(reqs), user, to.Sub(from).Round(time.Second), perHour, cluster.CountByKey(reqs))
		for _, r := range reqs {
			t.Logf("  %s %s %s", r.RequestReceived.Format(time.TimeOnly), r.Verb, r.RequestURI)
		}
		if perHour > 60 {
			t.Errorf("%.0f API requests per node per hour at idle, target <= 60", perHour)
		}
	})

	t.Run("ConfigMapChangeAppliedWithoutRestart", func(t *testing.T) {
		before := scrape(ctx, t)
		reloads := metricValue(before, "nodeagent_config_reloads_total")
		hash := configHash(before)
		updateConfig(ctx, t, c, func(cfg string) string {
			return strings.Replace(cfg, "perMinute: 6", "perMinute: 7", 1)
		})
		err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			body := scrape(ctx, t)
			return metricValue(body, "nodeagent_config_reloads_total") > reloads && configHash(body) != hash, nil
		})
		if err != nil {
			t.Fatalf("agent did not apply the new config (reloads before %v, hash %s): %v", reloads, hash, err)
		}
		waitEvent(ctx, t, c, "ConfigReloaded", corev1.EventTypeNormal, time.Minute)
		assertNotRestarted(ctx, t, c, pod)
	})

	t.Run("BrokenConfigMapKeepsLastGood", func(t *testing.T) {
		before := scrape(ctx, t)
		failures := metricValue(before, "nodeagent_config_reload_failures_total")
		hash := configHash(before)
		good := updateConfig(ctx, t, c, func(cfg string) string {
			return cfg + "\nnoSuchFeature:\n  enabled: true\n"
		})
		defer updateConfig(ctx, t, c, func(string) string { return good })
		err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			return metricValue(scrape(ctx, t), "nodeagent_config_reload_failures_total") > failures, nil
		})
		if err != nil {
			t.Fatalf("agent did not reject the broken config: %v", err)
		}
		waitEvent(ctx, t, c, "ConfigRejected", corev1.EventTypeWarning, time.Minute)
		if h := configHash(scrape(ctx, t)); h != hash {
			t.Errorf("config hash changed to %s after a broken config, want the last good %s", h, hash)
		}
		if code := get(ctx, t, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz = %d after a broken config", code)
		}
		assertNotRestarted(ctx, t, c, pod)
	})

	t.Run("DNSThroughAgent", func(t *testing.T) {
		testDNSThroughAgent(ctx, t, c)
	})

	t.Run("ImageWarm", func(t *testing.T) {
		testImageWarm(ctx, t, c)
	})

	t.Run("RaidSingleDiskThroughDaemonSet", func(t *testing.T) {
		testRaidSingleDisk(ctx, t, c, ref)
	})

	t.Run("S3MountSurvivesDaemonKillAndAgentRestart", func(t *testing.T) {
		testS3Mounts(ctx, t, c, ref)
	})

	t.Run("Interrupt", func(t *testing.T) {
		testInterrupt(ctx, t, c)
	})

	// Last, after everything above made the agent call the API: the RBAC
	// rules were enough.
	t.Run("NoForbiddenInAgentLog", func(t *testing.T) {
		// The agent itself must not have hit a forbidden error.
		log, err := agentLog(c)
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`(?i).*forbidden.*`).FindAllString(log, 5); len(m) > 0 {
			t.Errorf("agent log has forbidden errors:\n%s", strings.Join(m, "\n"))
		}
	})
}

// lastLine is the last non-empty line (kubectl prints warnings first).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func orCore(g string) string {
	if g == "" {
		return "core"
	}
	return g
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// agentRepo is the image repository the agent image was pushed to.
var agentRepo string

// applyChart renders the chart with the e2e image and args (helm template)
// and applies it server-side, as a `helm upgrade` would change the objects.
func applyChart(ctx context.Context, t *testing.T, c *cluster.Cluster, args ...string) {
	t.Helper()
	rendered, err := exec.CommandContext(ctx, helmBin(t), append([]string{"template", agentRelease,
		filepath.Join(repoDir(), "deploy", "helm", "nodeagent"),
		"--namespace", agentNamespace,
		"--set", "image.repository=" + agentRepo,
		"--set", "image.tag=e2e",
		"--set", "image.pullPolicy=Always",
	}, args...)...).Output()
	if err != nil {
		t.Fatalf("helm template: %v %s", err, stderrOf(err))
	}
	if out, err := c.Kubectl(ctx, string(rendered), "apply", "--server-side", "--force-conflicts", "--field-manager=e2e", "-f", "-"); err != nil {
		t.Fatalf("apply the chart: %v", err)
	} else {
		t.Logf("applied:\n%s", out)
	}
}

// applyConfig applies the chart with cfg as its config file (helm's
// --set-file config=...): the privileges follow what cfg enables.
func applyConfig(ctx context.Context, t *testing.T, c *cluster.Cluster, cfg string, args ...string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	applyChart(ctx, t, c, append([]string{"--set-file", "config=" + f}, args...)...)
}

// currentConfig is the config file in the agent's ConfigMap.
func currentConfig(ctx context.Context, t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	cm, err := c.Client.CoreV1().ConfigMaps(agentNamespace).Get(ctx, agentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data["config.yaml"]
}

// waitRollout waits until the DaemonSet's current template runs Ready on the
// node and no older pod is left, and returns that pod.
func waitRollout(ctx context.Context, t *testing.T, c *cluster.Cluster) *corev1.Pod {
	t.Helper()
	var ds *appsv1.DaemonSet
	var n int
	err := wait.PollUntilContextTimeout(ctx, time.Second, 4*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		ds, err = c.Client.AppsV1().DaemonSets(agentNamespace).Get(ctx, agentName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pods, err := c.Client.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=nodeagent"})
		if err != nil {
			return false, nil
		}
		n = len(pods.Items)
		s := ds.Status
		return s.ObservedGeneration >= ds.Generation && s.DesiredNumberScheduled == 1 &&
			s.NumberReady == 1 && s.UpdatedNumberScheduled == 1 && n == 1, nil
	})
	if err != nil {
		var st any
		if ds != nil {
			st = ds.Status
		}
		pods, _ := c.Kubectl(ctx, "", "-n", agentNamespace, "get", "pods", "-o", "wide")
		t.Fatalf("DaemonSet %s/%s not rolled out (%d pods): %v; status %+v\n%s", agentNamespace, agentName, n, err, st, pods)
	}
	return agentPod(ctx, t, c)
}

func agentPod(ctx context.Context, t *testing.T, c *cluster.Cluster) *corev1.Pod {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=nodeagent"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("want 1 agent pod, got %d", len(pods.Items))
	}
	return &pods.Items[0]
}

func agentLog(c *cluster.Cluster) (string, error) {
	pods, err := c.Client.CoreV1().Pods(agentNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=nodeagent"})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, p := range pods.Items {
		l, err := c.PodLog(agentNamespace, p.Name, "nodeagent")
		if err != nil {
			return "", err
		}
		b.WriteString(l)
	}
	return b.String(), nil
}

func assertNotRestarted(ctx context.Context, t *testing.T, c *cluster.Cluster, orig *corev1.Pod) {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(agentNamespace).Get(ctx, orig.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("agent pod %s: %v", orig.Name, err)
	}
	if p.UID != orig.UID {
		t.Errorf("agent pod was replaced")
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.RestartCount != 0 {
			t.Errorf("container %s restarted %d times", cs.Name, cs.RestartCount)
		}
	}
}

func metricsURL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(cluster.AgentMetricsPort) + path
}

func get(ctx context.Context, t *testing.T, path string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL(path), nil)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func scrape(ctx context.Context, t *testing.T) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL("/metrics"), nil)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %v %s", err, resp.Status)
	}
	return string(b)
}

// metricValue returns the value of an unlabelled sample, or -1.
func metricValue(body, name string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

var hashRE = regexp.MustCompile(`nodeagent_config_info\{[^}]*hash="([^"]+)"[^}]*\} 1`)

func configHash(body string) string {
	if m := hashRE.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// updateConfig edits the agent's ConfigMap and returns the config it had.
func updateConfig(ctx context.Context, t *testing.T, c *cluster.Cluster, edit func(string) string) string {
	t.Helper()
	cm, err := c.Client.CoreV1().ConfigMaps(agentNamespace).Get(ctx, agentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old := cm.Data["config.yaml"]
	cm.Data["config.yaml"] = edit(old)
	if cm.Data["config.yaml"] == old {
		t.Fatalf("edit did not change the config:\n%s", old)
	}
	if _, err := c.Client.CoreV1().ConfigMaps(agentNamespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return old
}

// waitEvent waits for an events.k8s.io Event with reason and type ("" for
// any) on the Node, reported by the agent.
func waitEvent(ctx context.Context, t *testing.T, c *cluster.Cluster, reason, typ string, timeout time.Duration) {
	t.Helper()
	var seen []string
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		evs, err := c.Client.EventsV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, e := range evs.Items {
			seen = append(seen, fmt.Sprintf("%s %s %s/%s %s: %s", e.Type, e.Reason, e.Regarding.Kind, e.Regarding.Name, e.ReportingController, e.Note))
			if (reason == "" || e.Reason == reason) && (typ == "" || e.Type == typ) && e.Regarding.Kind == "Node" && e.Regarding.Name == c.NodeName &&
				e.ReportingController == agentController {
				t.Logf("event: %s %s by %s: %s", e.Type, e.Reason, e.ReportingController, e.Note)
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s Event %s on node %s within %s; events:\n  %s", typ, reason, c.NodeName, timeout, strings.Join(seen, "\n  "))
	}
}
