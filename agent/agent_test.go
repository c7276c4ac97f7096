package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeagent/nodeagent/agent/kube"
	"github.com/nodeagent/nodeagent/agent/kube/kubetest"
)

func TestMain(m *testing.M) {
	minInterval = time.Millisecond // the tests poll and back off in milliseconds
	goleak.VerifyTestMain(m,
		// client-go's klog flush daemon lives for the process.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

// fast makes the agent poll and back off in milliseconds.
const fast = `
agent:
  reloadInterval: 20ms
  restart: {initialBackoff: 10ms, maxBackoff: 40ms, resetAfter: 1h}
  readiness: {gatingFeatures: [alpha], checkInterval: 20ms}
`

type harness struct {
	a      *Agent
	reg    *prometheus.Registry
	alpha  *counters
	beta   *counters
	cancel context.CancelFunc
	done   chan error
}

// start runs an agent on the config file at path (or data, if path is "").
func start(t *testing.T, path string, data string, k *kube.Client) *harness {
	t.Helper()
	return startWith(t, Options{ConfigPath: path, DefaultConfig: []byte(data), Kube: k})
}

// startWith runs an agent built from opts, with the test features.
func startWith(t *testing.T, opts Options) *harness {
	t.Helper()
	h, err := newHarness(t, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h
}

func newHarness(t *testing.T, opts Options) (*harness, error) {
	h := &harness{reg: prometheus.NewRegistry(), alpha: &counters{}, beta: &counters{}, done: make(chan error, 1)}
	opts.Specs = []Spec{testSpec("alpha", h.alpha), testSpec("beta", h.beta)}
	opts.NodeName, opts.Registry, opts.Version, opts.Log = "node-1", h.reg, "test", testLog(t)
	a, err := New(opts)
	if err != nil {
		return nil, err
	}
	h.a = a
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- a.Run(ctx) }()
	t.Cleanup(h.stop)
	return h, nil
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
	h.done <- nil // let a second stop return at once
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statusOf(h *harness, name string) Status {
	for _, st := range h.a.sup.statuses(nil) {
		if st.Feature == name {
			return st
		}
	}
	return Status{}
}

func TestFailingFeatureRestartsWithBackoffOthersKeepRunning(t *testing.T) {
	h := start(t, "", fast+"alpha:\n  failRuns: 3\n", nil)
	eventually(t, "alpha running after 3 failures", func() bool {
		return h.alpha.runs.Load() == 4 && statusOf(h, "alpha").State == StateRunning
	})
	if got := testutil.ToFloat64(h.a.metrics.featureRestarts.WithLabelValues("alpha")); got != 3 {
		t.Errorf("nodeagent_feature_restarts_total{feature=alpha} = %v, want 3", got)
	}
	st := statusOf(h, "alpha")
	if st.Restarts != 3 || !strings.Contains(st.LastError, "disk vanished") {
		t.Errorf("alpha status = %+v, want 3 restarts and the last error kept", st)
	}
	if n := h.beta.runs.Load(); n != 1 {
		t.Errorf("beta ran %d times, want 1: a failing feature must not disturb the others", n)
	}
	if got := testutil.ToFloat64(h.a.metrics.featureUp.WithLabelValues("beta")); got != 1 {
		t.Errorf("nodeagent_feature_up{feature=beta} = %v, want 1", got)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := RestartConfig{InitialBackoff: time.Second, MaxBackoff: 10 * time.Second}
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i, w := range want {
		if got := backoffDelay(b, i); got != w*time.Second {
			t.Errorf("attempt %d: %s, want %s", i, got, w*time.Second)
		}
	}
}

func TestFeatureInBackoffIsNotReady(t *testing.T) {
	h := start(t, "", strings.Replace(fast, "initialBackoff: 10ms, maxBackoff: 40ms", "initialBackoff: 1h, maxBackoff: 1h", 1)+"alpha:\n  failRuns: 1\n", nil)
	eventually(t, "alpha in backoff", func() bool { return statusOf(h, "alpha").State == StateBackoff })
	rec := httptest.NewRecorder()
	h.a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d, want 503", rec.Code)
	}
	var rep ReadyReport
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Ready || len(rep.Blocking) != 1 || !strings.Contains(rep.Blocking[0], "alpha: backoff: disk vanished") {
		t.Errorf("/readyz = %+v, want alpha blocking with its error", rep)
	}
}

func TestDisabledFeatureIsNotRun(t *testing.T) {
	h := start(t, "", fast+"beta:\n  enabled: false\n", nil)
	eventually(t, "alpha running", func() bool { return h.alpha.runs.Load() == 1 })
	if h.beta.built.Load() != 0 || statusOf(h, "beta").State != StateDisabled {
		t.Errorf("beta built %d times, state %s; want never built, disabled", h.beta.built.Load(), statusOf(h, "beta").State)
	}
}

// configMapDir lays out a directory like kubelet's ConfigMap volume:
// config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>.
type configMapDir struct {
	t   *testing.T
	dir string
	gen int
}

func newConfigMapDir(t *testing.T, data string) *configMapDir {
	c := &configMapDir{t: t, dir: t.TempDir()}
	c.write(data)
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), filepath.Join(c.dir, "config.yaml")); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *configMapDir) path() string { return filepath.Join(c.dir, "config.yaml") }

// write swaps in new contents the way kubelet's AtomicWriter does.
func (c *configMapDir) write(data string) {
	c.gen++
	ts := fmt.Sprintf("..2026_11_23_21_00_%02d.%d", c.gen, c.gen)
	must(c.t, os.Mkdir(filepath.Join(c.dir, ts), 0o755))
	must(c.t, os.WriteFile(filepath.Join(c.dir, ts, "config.yaml"), []byte(data), 0o644))
	old, _ := os.Readlink(filepath.Join(c.dir, "..data"))
	must(c.t, os.Symlink(ts, filepath.Join(c.dir, "..data_tmp")))
	must(c.t, os.Rename(filepath.Join(c.dir, "..data_tmp"), filepath.Join(c.dir, "..data")))
	if old != "" {
		must(c.t, os.RemoveAll(filepath.Join(c.dir, old)))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReloadGoodBadGoodThroughConfigMapSymlinkSwap(t *testing.T) {
	cm := newConfigMapDir(t, fast)
	h := start(t, cm.path(), "", nil)
	eventually(t, "both features running", func() bool { return h.alpha.runs.Load() == 1 && h.beta.runs.Load() == 1 })
	hash0 := h.a.Config().Hash

	// good: only alpha's section changes, so only alpha is rebuilt.
	cm.write(fast + "alpha:\n  cache: {maxEntries: 7}\n")
	eventually(t, "alpha rebuilt", func() bool { return h.alpha.built.Load() == 2 && h.alpha.runs.Load() == 2 })
	if c := h.a.Config().Features["alpha"].(*testConfig); c.Cache.MaxEntries != 7 {
		t.Errorf("alpha maxEntries = %d, want 7", c.Cache.MaxEntries)
	}
	if h.beta.built.Load() != 1 || h.beta.runs.Load() != 1 {
		t.Errorf("beta rebuilt (%d builds, %d runs): an unchanged section must not restart", h.beta.built.Load(), h.beta.runs.Load())
	}
	hash1 := h.a.Config().Hash
	if hash1 == hash0 || testutil.ToFloat64(h.a.metrics.configInfo.WithLabelValues(hash1)) != 1 {
		t.Errorf("nodeagent_config_info does not carry the new hash %s", hash1)
	}

	// bad: rejected, counted, the last good config stays in force.
	cm.write(fast + "alpha:\n  cache: {maxEntries: -1}\n")
	eventually(t, "reload failure counted", func() bool { return testutil.ToFloat64(h.a.metrics.reloadFailures) == 1 })
	if h.a.Config().Hash != hash1 || h.alpha.built.Load() != 2 {
		t.Errorf("bad config took effect: hash %s (want %s), alpha builds %d", h.a.Config().Hash, hash1, h.alpha.built.Load())
	}
	if got := testutil.CollectAndCount(h.a.metrics.configInfo); got != 1 {
		t.Errorf("nodeagent_config_info has %d series, want 1", got)
	}
	time.Sleep(100 * time.Millisecond) // several polls: the same bad file is counted once
	if got := testutil.ToFloat64(h.a.metrics.reloadFailures); got != 1 {
		t.Errorf("reload failures = %v after repeated polls of one bad file, want 1", got)
	}

	// good again.
	cm.write(fast + "alpha:\n  cache: {maxEntries: 9}\n")
	eventually(t, "good config applied", func() bool {
		c := h.a.Config().Features["alpha"].(*testConfig)
		return c.Cache.MaxEntries == 9 && h.alpha.runs.Load() == 3
	})
	if got := testutil.ToFloat64(h.a.metrics.reloads); got != 2 {
		t.Errorf("nodeagent_config_reloads_total = %v, want 2", got)
	}
	// the rebuilt instance registered its metric again without a clash.
	if got := testutil.ToFloat64(h.a.metrics.featureUp.WithLabelValues("alpha")); got != 1 {
		t.Errorf("alpha up = %v after rebuilds", got)
	}
}

// An empty file, or one cut off mid-write, would validate as "all
// defaults" (dnscache enabled: false, its interface torn down). It is
// rejected like any bad file and the last good config stays.
func TestReloadRejectsEmptyAndTruncatedFiles(t *testing.T) {
	good := fast + "beta:\n  enabled: true\n  cache: {maxEntries: 7}\n"
	cm := newConfigMapDir(t, good)
	h := start(t, cm.path(), "", nil)
	eventually(t, "beta running", func() bool { return h.beta.runs.Load() == 1 })
	hash := h.a.Config().Hash
	for i, bad := range []string{"", "# cut\n", good[:strings.Index(good, "beta:")+len("beta:\n")], good[:len(good)-1], good + "  labels:\n"} {
		cm.write(bad)
		eventually(t, fmt.Sprintf("rejection %d of %q", i+1, bad), func() bool { return testutil.ToFloat64(h.a.metrics.reloadFailures) == float64(i+1) })
		if h.a.Config().Hash != hash || h.beta.built.Load() != 1 || statusOf(h, "beta").State != StateRunning {
			t.Fatalf("%q took effect: hash %s (want %s), beta builds %d, state %s", bad, h.a.Config().Hash, hash, h.beta.built.Load(), statusOf(h, "beta").State)
		}
	}
}

// SIGTERM while a reload waits for the old instance to drain: the drain
// gets its agent.shutdownTimeout, the agent returns only once it is over,
// and no new instance starts. (The reload's stop context derived from
// Run's, so the signal cut the drain short and Run returned under it.)
func TestSIGTERMDuringReloadLetsTheDrainFinish(t *testing.T) {
	cm := newConfigMapDir(t, fast+"alpha:\n  drain: 300ms\n")
	h := start(t, cm.path(), "", nil)
	eventually(t, "alpha running", func() bool { return h.alpha.runs.Load() == 1 })
	cm.write(fast + "alpha:\n  drain: 300ms\n  cache: {maxEntries: 7}\n")
	eventually(t, "the reload cancelled the old alpha", func() bool { return h.alpha.cancelled.Load() == 1 })
	h.cancel() // SIGTERM
	if err := <-h.done; err != nil {
		t.Errorf("Run = %v", err)
	}
	h.done <- nil
	if got := h.alpha.drained.Load(); got != 1 {
		t.Errorf("Run returned with the old alpha still draining (%d drains done, want 1)", got)
	}
	if got := h.alpha.built.Load(); got != 1 {
		t.Errorf("alpha built %d times: no new instance may start during shutdown", got)
	}
}

// An old instance that does not stop within shutdownTimeout on a reload is
// reported failed and still waited for at shutdown, which then says that a
// feature did not stop (its unit used to be replaced, so shutdown forgot it).
func TestStuckOldInstanceStillWaitedForAtShutdown(t *testing.T) {
	slow := strings.Replace(fast, "agent:\n", "agent:\n  shutdownTimeout: 50ms\n", 1)
	cm := newConfigMapDir(t, slow+"alpha:\n  drain: 400ms\n")
	h := start(t, cm.path(), "", nil)
	eventually(t, "alpha running", func() bool { return h.alpha.runs.Load() == 1 })
	cm.write(slow + "alpha:\n  drain: 400ms\n  cache: {maxEntries: 7}\n")
	eventually(t, "alpha failed: the old one would not stop", func() bool {
		st := statusOf(h, "alpha")
		return st.State == StateFailed && strings.Contains(st.LastError, "did not stop")
	})
	h.cancel()
	err := <-h.done
	h.done <- nil
	if h.alpha.drained.Load() == 0 && (err == nil || !strings.Contains(err.Error(), "did not stop")) {
		t.Errorf("Run = %v with the old alpha still draining: shutdown must wait for it or say it did not stop", err)
	}
	eventually(t, "the old alpha drained", func() bool { return h.alpha.drained.Load() == 1 })
}

// A transient read error (the ConfigMap volume briefly without the file)
// is counted once; when the same file is back, the config on disk is the
// one in force again and last_reload_successful says so.
func TestTransientReadErrorRecovers(t *testing.T) {
	cm := newConfigMapDir(t, fast)
	h := start(t, cm.path(), "", nil)
	eventually(t, "running", func() bool { return h.alpha.runs.Load() == 1 })
	data := filepath.Join(cm.dir, "..data")
	must(t, os.Rename(data, data+".away"))
	eventually(t, "read error counted", func() bool {
		return testutil.ToFloat64(h.a.metrics.reloadFailures) == 1 && testutil.ToFloat64(h.a.metrics.lastReloadOK) == 0
	})
	rounds := h.a.gateRounds.Load()
	eventually(t, "a few more polls", func() bool { return h.a.gateRounds.Load() > rounds+3 })
	if got := testutil.ToFloat64(h.a.metrics.reloadFailures); got != 1 {
		t.Errorf("reload failures = %v while one read error lasts, want 1", got)
	}
	must(t, os.Rename(data+".away", data))
	eventually(t, "last_reload_successful back to 1", func() bool { return testutil.ToFloat64(h.a.metrics.lastReloadOK) == 1 })
	if h.alpha.built.Load() != 1 {
		t.Errorf("alpha rebuilt for an unchanged file")
	}
}

// A bad config at first start crash-looped every node. The config in force
// is kept on the host; an agent that finds the mounted file invalid starts
// from it, loudly, and takes the next good file as usual.
func TestStartsFromLastGoodConfigWhenMountedOneIsInvalid(t *testing.T) {
	lastGood := filepath.Join(t.TempDir(), "var", "lib", "nodeagent", "last-good-config.yaml")
	good := fast + "alpha:\n  cache: {maxEntries: 7}\n"
	cm := newConfigMapDir(t, good)
	h := startWith(t, Options{ConfigPath: cm.path(), LastGoodPath: lastGood})
	eventually(t, "the good config kept on the host", func() bool {
		b, _ := os.ReadFile(lastGood)
		return string(b) == good
	})
	h.stop()

	cm.write(fast + "alpha:\n  cache: {maxEntries: -1}\n") // the bad ConfigMap reaches the node
	// No copy: the error says so, and the agent does not start.
	if _, err := newHarness(t, Options{ConfigPath: cm.path(), LastGoodPath: lastGood + ".none"}); err == nil ||
		!strings.Contains(err.Error(), "no last good config at") || !strings.Contains(err.Error(), "alpha.cache.maxEntries") {
		t.Fatalf("nothing to start from: New = %v", err)
	}
	if _, err := newHarness(t, Options{ConfigPath: cm.path()}); err == nil {
		t.Fatal("without a last good config, an invalid file must not start")
	}

	api := kubetest.New(t, newNode())
	h = startWith(t, Options{ConfigPath: cm.path(), LastGoodPath: lastGood, Kube: kubeClient(t, api)})
	if c := h.a.Config().Features["alpha"].(*testConfig); c.Cache.MaxEntries != 7 {
		t.Fatalf("alpha maxEntries = %d, want 7 from the last good config", c.Cache.MaxEntries)
	}
	eventually(t, "alpha running", func() bool { return h.alpha.runs.Load() == 1 })
	eventually(t, "a Warning Event naming the bad key", func() bool {
		return hasEvent(api, corev1.EventTypeWarning, "ConfigRejected", "alpha.cache.maxEntries")
	})
	if testutil.ToFloat64(h.a.metrics.lastGoodInUse) != 1 || testutil.ToFloat64(h.a.metrics.lastReloadOK) != 0 {
		t.Errorf("last_good_in_use = %v, last_reload_successful = %v; want 1 and 0",
			testutil.ToFloat64(h.a.metrics.lastGoodInUse), testutil.ToFloat64(h.a.metrics.lastReloadOK))
	}
	rounds := h.a.gateRounds.Load()
	eventually(t, "a few polls of the same bad file", func() bool { return h.a.gateRounds.Load() > rounds+3 })
	if got := testutil.ToFloat64(h.a.metrics.reloadFailures); got != 1 {
		t.Errorf("reload failures = %v, want the bad file counted once", got)
	}

	fixed := fast + "alpha:\n  cache: {maxEntries: 9}\n"
	cm.write(fixed)
	eventually(t, "the fixed file applied and kept", func() bool {
		b, _ := os.ReadFile(lastGood)
		return h.a.Config().Features["alpha"].(*testConfig).Cache.MaxEntries == 9 && string(b) == fixed &&
			testutil.ToFloat64(h.a.metrics.lastGoodInUse) == 0 && testutil.ToFloat64(h.a.metrics.lastReloadOK) == 1
	})
}

func TestReloadDisablesAndEnables(t *testing.T) {
	cm := newConfigMapDir(t, fast)
	h := start(t, cm.path(), "", nil)
	eventually(t, "beta running", func() bool { return h.beta.runs.Load() == 1 })
	cm.write(fast + "beta:\n  enabled: false\n")
	eventually(t, "beta disabled", func() bool { return statusOf(h, "beta").State == StateDisabled })
	cm.write(fast)
	eventually(t, "beta running again", func() bool { return h.beta.runs.Load() == 2 && statusOf(h, "beta").State == StateRunning })
}

func newNode() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", ResourceVersion: "1"},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: "nodeagent.io/not-ready", Effect: corev1.TaintEffectNoSchedule},
			{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule},
		}},
	}
}

func TestReadinessGateRemovesTaintOnlyWhenGatingFeaturesReady(t *testing.T) {
	api := kubetest.New(t, newNode())
	cm := newConfigMapDir(t, fast+"alpha:\n  notReady: true\n")
	h := start(t, cm.path(), "", kubeClient(t, api))

	eventually(t, "NodeAgentReady=False", func() bool {
		c := condition(api.Node())
		return c != nil && c.Status == corev1.ConditionFalse && strings.Contains(c.Message, "alpha: array not assembled")
	})
	eventually(t, "a Warning Event naming the blocking feature", func() bool {
		return hasEvent(api, corev1.EventTypeWarning, "FeaturesNotReady", "alpha: array not assembled")
	})
	n := api.Node()
	if len(n.Spec.Taints) != 2 {
		t.Fatalf("taints = %v: the startup taint must stay while alpha is not ready", n.Spec.Taints)
	}
	if got := testutil.ToFloat64(h.a.metrics.nodeReady); got != 0 {
		t.Errorf("nodeagent_node_ready = %v, want 0", got)
	}

	cm.write(fast) // alpha becomes ready
	eventually(t, "taint removed and label set", func() bool {
		n := api.Node()
		return len(n.Spec.Taints) == 1 && n.Labels["nodeagent.io/ready"] == "true"
	})
	n = api.Node()
	if n.Spec.Taints[0].Key != "karpenter.sh/disrupted" {
		t.Errorf("taints = %v: only the startup taint may go", n.Spec.Taints)
	}
	eventually(t, "NodeAgentReady=True and a NodeReady Event", func() bool {
		c := condition(api.Node())
		return c != nil && c.Status == corev1.ConditionTrue && hasEvent(api, corev1.EventTypeNormal, "NodeReady", "")
	})
}

// Once the node is released the gate keeps checking every checkInterval but
// costs the API server nothing: it reads the watched Node and writes only
// what changed. (Polling read the whole Node on every round.)
func TestReadinessGateAtIdleSendsNoRequests(t *testing.T) {
	api := kubetest.New(t, newNode())
	h := start(t, "", fast, kubeClient(t, api))
	eventually(t, "node released", func() bool {
		n := api.Node()
		c := condition(n)
		return len(n.Spec.Taints) == 1 && n.Labels["nodeagent.io/ready"] == "true" && c != nil && c.Status == corev1.ConditionTrue
	})
	eventually(t, "the watch has the released node", func() bool {
		n := h.a.opts.Kube.NodeWatch().Node()
		return n != nil && n.ResourceVersion == api.Node().ResourceVersion
	})
	before := api.Requests()
	rounds := h.a.gateRounds.Load()
	eventually(t, "ten more gate rounds", func() bool { return h.a.gateRounds.Load() >= rounds+10 })
	after := api.Requests()
	for k, v := range after {
		if k != "WATCH nodes" && k != "POST events" && v != before[k] {
			t.Errorf("%s: %d requests in ten idle gate rounds, want 0", k, v-before[k])
		}
	}
}

func TestBadConfigRecordsWarningEvent(t *testing.T) {
	api := kubetest.New(t, newNode())
	cm := newConfigMapDir(t, fast)
	h := start(t, cm.path(), "", kubeClient(t, api))
	eventually(t, "running", func() bool { return h.alpha.runs.Load() == 1 })
	cm.write(fast + "alpha:\n  bogus: 1\n")
	eventually(t, "ConfigRejected Warning Event", func() bool {
		return hasEvent(api, corev1.EventTypeWarning, "ConfigRejected", "alpha.bogus: unknown key")
	})
}

func condition(n *corev1.Node) *corev1.NodeCondition {
	if n == nil {
		return nil
	}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == ConditionType {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func kubeClient(t *testing.T, api *kubetest.Server) *kube.Client {
	k, err := kube.New(api.Config, "node-1", testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func hasEvent(api *kubetest.Server, typ, reason, noteContains string) bool {
	for _, e := range api.Events() {
		if e.Type == typ && e.Reason == reason && strings.Contains(e.Note, noteContains) && e.Regarding.Kind == "Node" {
			return true
		}
	}
	return false
}

func TestMetricsLintAndHealth(t *testing.T) {
	h := start(t, "", fast, nil)
	eventually(t, "running", func() bool { return h.alpha.runs.Load() == 1 })
	srv := httptest.NewServer(h.a.Handler())
	defer srv.Close()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// During a surge rollout exactly one agent answers the metrics port: the
// second waits, serving its probe socket, and takes the port once the first
// lets go. (cmd/nodeagent tests the same with two real processes.)
func TestMetricsPortHasOneOwner(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	sock := filepath.Join(t.TempDir(), "probe.sock")
	h := startWith(t, Options{DefaultConfig: []byte(fast), MetricsAddr: addr, ProbeSocket: sock})
	eventually(t, "probe socket ready while the port is held", func() bool { return Probe(context.Background(), sock, "/readyz") == nil })
	// What holds the port accepts nothing here: a scrape would only queue.
	if got := testutil.ToFloat64(h.a.metrics.nodeReady); got != 1 {
		t.Errorf("node_ready = %v while waiting for the port, want 1", got)
	}
	ln.Close() // the previous agent exits
	client := &http.Client{Timeout: 2 * time.Second}
	eventually(t, "the port taken over", func() bool {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	h.stop()
}

// The README's metrics table lists exactly the agent's own metrics.
func TestREADMEListsEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		if f := strings.Split(line, "`"); strings.HasPrefix(line, "| `nodeagent_") && len(f) > 1 {
			documented[f[1]] = true
		}
	}
	reg := prometheus.NewRegistry()
	m := newCoreMetrics(reg)
	m.featureUp.WithLabelValues("x")
	m.featureReady.WithLabelValues("x")
	m.featureRestarts.WithLabelValues("x")
	m.configInfo.WithLabelValues("x")
	m.buildInfo.WithLabelValues("x")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !documented[mf.GetName()] {
			t.Errorf("agent/README.md does not list %s", mf.GetName())
		}
		delete(documented, mf.GetName())
	}
	for name := range documented {
		t.Errorf("agent/README.md lists %s, which the agent does not export", name)
	}
}
