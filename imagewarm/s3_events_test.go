package imagewarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/agent/kube"
	"github.com/nodeagent/nodeagent/agent/kube/kubetest"
)

// failingRunner fails every daemon start, as a missing mount-s3 would.
type failingRunner struct{}

func (failingRunner) Run(_ context.Context, c hostexec.Cmd) ([]byte, error) {
	if strings.Contains(strings.Join(c.Args, " "), "setsid") {
		return nil, errors.New("sh: 1: exec: mount-s3: not found")
	}
	return nil, nil
}

// startedKube is a kube client of a kubetest API server, started (Events
// are sent from its queue) until the test ends.
func startedKube(t *testing.T) (*kubetest.Server, *kube.Client) {
	t.Helper()
	api := kubetest.New(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", ResourceVersion: "1"}})
	k, err := kube.New(api.Config, "node-1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k.Start(ctx)
	t.Cleanup(func() { cancel(); k.Stop() })
	return api, k
}

func s3Events(api *kubetest.Server, reason string) []string {
	var out []string
	for _, e := range api.Events() {
		if e.Reason == reason && e.Regarding.Kind == "Node" {
			out = append(out, e.Type+" "+e.Note)
		}
	}
	return out
}

// TestS3MountFailedEvent: a mount that cannot start retries with backoff,
// counts every failure and posts one Warning Event for the run of failures
// (not one per attempt: the API server is shared by thousands of nodes).
func TestS3MountFailedEvent(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc", "1", "mountinfo"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := defaultS3Config()
	cfg.S3.Namespace = MountNamespaceHost
	cfg.S3.CgroupRoot = ""
	cfg.S3.Retry = RetryConfig{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	cfg.S3Mounts = []S3MountConfig{{Name: "libs", Bucket: "libs--use1-az4--x-s3", MountPath: "/mnt/s3/libs", Required: true}}
	m, err := newS3Metrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	api, k := startedKube(t)
	s := newS3Mounts(&cfg, hostpath.New(root), failingRunner{}, slog.New(slog.DiscardHandler), m)
	s.kube = k
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	eventually(t, 10*time.Second, "five failed attempts and their Event", func() error {
		if n := testutil.ToFloat64(m.failures.WithLabelValues("libs")); n < 5 {
			return fmt.Errorf("%v failures yet, ready: %v", n, s.ready())
		}
		if len(s3Events(api, "S3MountFailed")) == 0 {
			return errors.New("no S3MountFailed Event yet")
		}
		return nil
	})
	evs := s3Events(api, "S3MountFailed")
	if len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning libs (libs--use1-az4--x-s3 at /mnt/s3/libs): not mounted yet: ") ||
		!strings.Contains(evs[0], "mount-s3: not found") {
		t.Errorf("S3MountFailed Events: %q, want one Warning naming the mount and the error", evs)
	}
	if err := s.ready(); err == nil || !strings.Contains(err.Error(), "mount-s3: not found") {
		t.Errorf("ready() = %v, want the mount's error", err)
	}
}
