package interrupt

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodeagent/nodeagent/agent"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// mockBinary finds ec2-metadata-mock (interrupt/hack/prereqs.sh installs it).
func mockBinary(t testing.TB) string {
	t.Helper()
	cache := os.Getenv("NODEAGENT_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "nodeagent")
	}
	p := filepath.Join(cache, "bin", "ec2-metadata-mock")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("ec2-metadata-mock"); err == nil {
		return p
	}
	t.Skipf("ec2-metadata-mock not installed (run interrupt/hack/prereqs.sh): not at %s nor on PATH", p)
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMock runs the real EC2 metadata mock on 127.0.0.1 with IMDSv2
// required (-I) and returns its endpoint once it answers.
func startMock(t testing.TB, args ...string) string {
	t.Helper()
	bin := mockBinary(t)
	port := freePort(t)
	home := t.TempDir() // the mock reads and may write config below $HOME
	argv := append(args, "-n", "127.0.0.1", "-p", fmt.Sprint(port), "-I")
	cmd := exec.Command(bin, argv...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(filepath.Join(home, "mock.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(20 * time.Second); ; {
		req, _ := http.NewRequest(http.MethodPut, endpoint+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return endpoint
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(home, "mock.log"))
			t.Fatalf("ec2-metadata-mock %v did not answer: %s", argv, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fakeCluster is the API server as the feature sees it, for unit tests of
// the decommission logic (e2e/ runs the real one).
type fakeCluster struct {
	mu        sync.Mutex
	node      *corev1.Node
	pods      []corev1.Pod
	evicted   []string
	guards    map[string]bool // ns/name
	events    []string        // "Kind/name Reason: note"
	evictErr  error
	listErr   error
	listCalls int
}

func newFakeCluster(pods ...corev1.Pod) *fakeCluster {
	return &fakeCluster{node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Annotations: map[string]string{}}},
		pods: pods, guards: map[string]bool{}}
}

func (c *fakeCluster) Node(context.Context) (*corev1.Node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node.DeepCopy(), nil
}

func (c *fakeCluster) NodePods(_ context.Context, selector string) ([]corev1.Pod, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listCalls++
	if c.listErr != nil {
		return nil, c.listErr
	}
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range c.pods {
		if sel.Matches(labels.Set(p.Labels)) {
			out = append(out, *p.DeepCopy())
		}
	}
	return out, nil
}

func (c *fakeCluster) Pod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.pods {
		if p.Namespace == ns && p.Name == name {
			return p.DeepCopy(), nil
		}
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
}

func (c *fakeCluster) AddTaint(_ context.Context, t corev1.Taint) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, old := range c.node.Spec.Taints {
		if old.Key == t.Key && old.Effect == t.Effect {
			changed := old.Value != t.Value
			c.node.Spec.Taints[i] = t
			return changed, nil
		}
	}
	c.node.Spec.Taints = append(c.node.Spec.Taints, t)
	return true, nil
}

func (c *fakeCluster) SetAnnotation(_ context.Context, key string, value *string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if value == nil {
		delete(c.node.Annotations, key)
	} else {
		c.node.Annotations[key] = *value
	}
	return nil
}

func (c *fakeCluster) Evict(_ context.Context, ns, name string, grace *int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.evictErr != nil {
		return c.evictErr
	}
	if c.guards[ns+"/"+guardPrefix+name] {
		return apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
	}
	for _, p := range c.pods {
		if p.Namespace == ns && p.Name == name {
			g := int64(-1)
			if grace != nil {
				g = *grace
			}
			c.evicted = append(c.evicted, fmt.Sprintf("%s/%s grace=%d", ns, name, g))
			return nil
		}
	}
	return apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
}

func (c *fakeCluster) GuardPod(_ context.Context, pod *corev1.Pod, name string, _ map[string]string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.guards[pod.Namespace+"/"+name] = true
	return nil
}

func (c *fakeCluster) Unguard(_ context.Context, ns, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.guards, ns+"/"+name)
	return nil
}

func (c *fakeCluster) Event(_, reason, _, note string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, "Node "+reason+": "+fmt.Sprintf(note, args...))
}

func (c *fakeCluster) PodEvent(pod *corev1.Pod, _, reason, _, note string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, "Pod/"+pod.Name+" "+reason+": "+fmt.Sprintf(note, args...))
}

func (c *fakeCluster) eventsWith(reason string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.events {
		if strings.Contains(e, " "+reason+":") {
			out = append(out, e)
		}
	}
	return out
}

func (c *fakeCluster) taints() []corev1.Taint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.node.Spec.Taints)
}

// fakeTasks records signals; Wait returns when exit is closed for a container.
type fakeTasks struct {
	mu      sync.Mutex
	signals map[string][]unix.Signal
	exits   map[string]chan uint32
	gone    map[string]bool
}

func newFakeTasks() *fakeTasks {
	return &fakeTasks{signals: map[string][]unix.Signal{}, exits: map[string]chan uint32{}, gone: map[string]bool{}}
}

func (f *fakeTasks) exit(id string) chan uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exits[id] == nil {
		f.exits[id] = make(chan uint32, 1)
	}
	return f.exits[id]
}

func (f *fakeTasks) Kill(_ context.Context, id string, sig unix.Signal) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone[id] {
		return errGone
	}
	f.signals[id] = append(f.signals[id], sig)
	return nil
}

func (f *fakeTasks) Wait(ctx context.Context, id string) (uint32, error) {
	select {
	case code := <-f.exit(id):
		return code, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (f *fakeTasks) Close() error { return nil }

func (f *fakeTasks) got(id string) []unix.Signal {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.signals[id])
}

// executorPod is a running Spark executor pod on node-1.
func executorPod(name, containerID string) corev1.Pod {
	return sparkPod(name, "executor", containerID)
}

func sparkPod(name, role, containerID string) corev1.Pod {
	container := "spark-kubernetes-executor"
	if role == "driver" {
		container = "spark-kubernetes-driver"
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "spark", UID: types.UID("uid-" + name),
			Labels: map[string]string{"spark-role": role, "spark-app-selector": "spark-app-1", "spark-exec-id": name}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: container}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
			Name: container, ContainerID: "containerd://" + containerID,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		}}},
	}
}

// testFeature builds the feature on fakes with its own registry.
func testFeature(t testing.TB, cfg *Config, c cluster, nodes nodeSource, tk tasks) (*Interrupt, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	deps := agent.Deps{Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})), Metrics: reg}
	f, err := newFeature(cfg, deps, c, nodes, tk)
	if err != nil {
		t.Fatal(err)
	}
	return f, reg
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runFeature runs f until the test ends.
func runFeature(t testing.TB, f *Interrupt) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// eventually waits for cond, polling: the tests wait for events, not sleeps.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// testConfig is the default config pointed at endpoint, polling fast.
func testConfig(endpoint string) *Config {
	cfg := DefaultConfig()
	cfg.Enabled = true
	cfg.IMDS.Endpoint = endpoint
	cfg.IMDS.PollInterval = 100 * time.Millisecond
	cfg.IMDS.Timeout = 500 * time.Millisecond
	cfg.Decommission.Deadline = 20 * time.Second
	return cfg
}
