package imagewarm

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/nodeagent/nodeagent/agent/config"
	"github.com/nodeagent/nodeagent/agent/featuretest"
	"github.com/nodeagent/nodeagent/agent/hostexec"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{"defaults", "{}", nil},
		{"good list", "images: [{ref: busybox}, {ref: \"ecr.example/spark@sha256:" + strings.Repeat("a", 64) + "\", platform: linux/arm64, pin: true, required: true}]", nil},
		{"empty ref", "images: [{ref: \"\"}]", []string{"images[0].ref: must not be empty"}},
		{"bad ref", "images: [{ref: \"UPPER/Case:tag\"}]", []string{"images[0].ref: not an image reference"}},
		{"bad platform", "images: [{ref: busybox, platform: \"linux/\"}]", []string{"images[0].platform: must be os/arch"}},
		{"duplicate", "images: [{ref: busybox}, {ref: docker.io/library/busybox:latest}]", []string{"images[1].ref: duplicate of images[0] (docker.io/library/busybox:latest)"}},
		{"unknown key", "images: [{ref: busybox, pinned: true}]", []string{"images[0].pinned: unknown key"}},
		{"relative socket", "containerdSocket: run/containerd.sock", []string{"containerdSocket: must be an absolute path"}},
		{"unknown blobWrite, relative contentDir", "blobWrite: fuse\ncontentDir: var/lib/containerd", []string{"blobWrite: must be \"direct\" or \"grpc\"", "contentDir: must be an absolute path"}},
		{"bounds", "maxConcurrentImages: 0\nmaxConcurrentDownloads: 0\npullTimeout: 0s", []string{"maxConcurrentImages: must be >= 1", "maxConcurrentDownloads: must be >= 1", "pullTimeout: must be > 0s"}},
		{"backoff order", "retry: {initialBackoff: 1m, maxBackoff: 1s}", []string{"retry.maxBackoff: must be >= retry.initialBackoff (1m0s), got 1s"}},
		{"secret name", "credentials: {secret: just-a-name}", []string{`credentials.secret: must be "namespace/name"`}},
		{"provider without bin dir", "credentials: {providerConfig: /etc/eks/image-credential-provider/config.json}", []string{"credentials.providerBinDir: must be an absolute path"}},
		{"duration without unit", "recheckInterval: 300", []string{"recheckInterval: must be a duration with a unit"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var node yaml.Node
			if err := yaml.Unmarshal([]byte(tc.yaml), &node); err != nil {
				t.Fatal(err)
			}
			cfg := DefaultConfig()
			err := config.Decode(&node, cfg, "")
			if err == nil {
				err = cfg.Validate()
			}
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestShippedDefaults: the chart's imagewarm section decodes to DefaultConfig().
func TestShippedDefaults(t *testing.T) {
	t.Parallel()
	scrambled := DefaultConfig()
	scrambled.MaxConcurrentImages = -1 // must be set back by the file
	featuretest.ShippedDefaults(t, "../deploy/helm/nodeagent/files/config.yaml", Name, scrambled, DefaultConfig())
}

func TestParseCRIConfig(t *testing.T) {
	t.Parallel()
	// Trimmed from containerd 1.6.20's Status verbose info.
	v16 := `{"containerd":{"snapshotter":"overlayfs","defaultRuntimeName":"runc","discardUnpackedLayers":true,"disableSnapshotAnnotations":true,"runtimes":{"runc":{"snapshotter":""}}},"registry":{"configPath":"/etc/containerd/certs.d:/etc/docker/certs.d"},"maxConcurrentDownloads":3}`
	got, err := parseCRIConfig(v16)
	if err != nil {
		t.Fatal(err)
	}
	want := criSettings{Snapshotter: "overlayfs", DiscardUnpackedLayers: true, DisableSnapshotAnnotations: true, RegistryConfigPath: "/etc/containerd/certs.d:/etc/docker/certs.d"}
	if got != want {
		t.Errorf("1.6: got %+v, want %+v", got, want)
	}
	// A per-runtime snapshotter (soci on some nodes) when the global is unset.
	got, err = parseCRIConfig(`{"containerd":{"defaultRuntimeName":"runc","runtimes":{"runc":{"snapshotter":"soci"}}}}`)
	if err != nil || got.Snapshotter != "soci" {
		t.Errorf("per-runtime snapshotter: %+v %v", got, err)
	}
	for _, bad := range []string{"", "{", `{"containerd":{}}`} {
		if _, err := parseCRIConfig(bad); err == nil {
			t.Errorf("parseCRIConfig(%q): no error", bad)
		}
	}
}

func TestRecordNames(t *testing.T) {
	t.Parallel()
	target := digest.FromString("manifest")
	cfg := digest.FromString("config")
	cases := []struct{ ref, want string }{
		{"busybox", cfg.String() + " docker.io/library/busybox:latest docker.io/library/busybox@" + target.String()},
		{"reg.example:5000/a/b:1.2", cfg.String() + " reg.example:5000/a/b:1.2 reg.example:5000/a/b@" + target.String()},
		{"reg.example/a@" + target.String(), cfg.String() + " reg.example/a@" + target.String()},
	}
	for _, tc := range cases {
		named, err := reference.ParseDockerRef(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(recordNames(named, target, cfg), " "); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.ref, got, tc.want)
		}
	}
}

func TestURLsMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		glob, image string
		want        bool
	}{
		{"*.dkr.ecr.*.amazonaws.com", "123456789012.dkr.ecr.us-east-1.amazonaws.com/spark:3.5", true},
		{"*.dkr.ecr.*.amazonaws.com", "dkr.ecr.us-east-1.amazonaws.com/spark", false},
		{"*.dkr.ecr.*.amazonaws.com", "a.b.dkr.ecr.us-east-1.amazonaws.com/spark", false},
		{"registry.example:5000", "registry.example:5000/x", true},
		{"registry.example:5000", "registry.example/x", false},
		{"registry.example/team", "registry.example/team/app", true},
		{"registry.example/team", "registry.example/other/app", false},
	}
	for _, tc := range cases {
		if got := urlsMatch(tc.glob, tc.image); got != tc.want {
			t.Errorf("urlsMatch(%q, %q) = %t", tc.glob, tc.image, got)
		}
	}
}

func TestDockerConfigJSON(t *testing.T) {
	t.Parallel()
	auth := base64.StdEncoding.EncodeToString([]byte("u:p:w"))
	got, err := parseDockerConfigJSON([]byte(`{"auths":{"https://index.docker.io/v1/":{"auth":"` + auth + `"},"reg.example:5000":{"username":"a","password":"b"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c := got["registry-1.docker.io"]; c != (cred{"u", "p:w"}) {
		t.Errorf("docker hub: %+v", c)
	}
	if c, ok := lookup(got, "reg.example:5000/x/y:1", "reg.example:5000"); !ok || c != (cred{"a", "b"}) {
		t.Errorf("lookup: %+v %t", c, ok)
	}
	if _, ok := lookup(got, "reg.example:5000/x/y:1", "mirror.example"); ok {
		t.Error("credentials handed to another host")
	}
	if _, err := parseDockerConfigJSON([]byte(`{"auths":{"x":{"auth":"!!"}}}`)); err == nil {
		t.Error("bad base64 accepted")
	}
}

// countingRunner answers as a credential provider plugin would.
type countingRunner struct {
	calls atomic.Int32
	resp  string
}

func (r *countingRunner) Run(_ context.Context, c hostexec.Cmd) ([]byte, error) {
	r.calls.Add(1)
	if !strings.Contains(string(c.Stdin), `"kind":"CredentialProviderRequest"`) {
		return nil, fmt.Errorf("stdin %s", c.Stdin)
	}
	return []byte(r.resp), nil
}

func TestProviderCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	os.WriteFile(file, []byte(`apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: ecr-credential-provider
  matchImages: ["*.dkr.ecr.*.amazonaws.com"]
  defaultCacheDuration: 12h
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  args: [get-credentials]
  env: [{name: AWS_PROFILE, value: x}]
`), 0o644)
	ps, err := loadProviderConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	host := "1.dkr.ecr.us-east-1.amazonaws.com"
	r := &countingRunner{resp: `{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"1m","auth":{"*.dkr.ecr.*.amazonaws.com":{"username":"AWS","password":"tok"}}}`}
	now := time.Unix(1000, 0)
	c := &creds{providers: ps, binDir: "/bin", exec: r, now: func() time.Time { return now }, cache: map[string]cachedAuth{}}
	fn := c.forImage(t.Context(), host+"/spark:1")
	for range 3 {
		u, p, err := fn(host)
		if err != nil || u != "AWS" || p != "tok" {
			t.Fatalf("creds: %q %q %v", u, p, err)
		}
	}
	// Another image of the same registry: cacheKeyType Registry.
	if _, _, err := c.forImage(t.Context(), host+"/other:2")(host); err != nil {
		t.Fatal(err)
	}
	if n := r.calls.Load(); n != 1 {
		t.Errorf("provider ran %d times within its cache duration, want 1", n)
	}
	now = now.Add(2 * time.Minute)
	fn(host)
	if n := r.calls.Load(); n != 2 {
		t.Errorf("provider ran %d times after the cache expired, want 2", n)
	}
	// An image no provider matches is anonymous.
	if u, p, err := c.forImage(t.Context(), "docker.io/library/busybox:latest")("registry-1.docker.io"); u != "" || p != "" || err != nil {
		t.Errorf("unmatched image got %q %q %v", u, p, err)
	}
	// A provider answering garbage fails the pull with a credentials error.
	c2 := &creds{providers: ps, binDir: "/bin", exec: &countingRunner{resp: "nope"}, now: time.Now, cache: map[string]cachedAuth{}}
	if _, _, err := c2.forImage(t.Context(), host+"/x:1")(host); !errors.Is(err, errCredentials) {
		t.Errorf("bad response: %v", err)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	cases := map[string]error{
		reasonTimeout:      fmt.Errorf("x: %w", context.DeadlineExceeded),
		reasonDiskFull:     fmt.Errorf("write: %w", syscall.ENOSPC),
		reasonUnauthorized: errors.New("pulling from host r: 401 Unauthorized"),
		reasonNotFound:     errors.New("r/x:y: not found"),
		reasonPlatform:     errors.New("no match for platform in manifest: not found"),
		reasonUnavailable:  errors.New("dial tcp 127.0.0.1:1: connect: connection refused"),
		reasonCredentials:  fmt.Errorf("%w: provider failed", errCredentials),
		reasonOther:        errors.New("something else"),
	}
	for want, err := range cases {
		if got := classify(err); got != want {
			t.Errorf("classify(%v) = %s, want %s", err, got, want)
		}
	}
}

// TestMetricsREADME keeps the metric list in README.md true and lints them.
func TestMetricsREADME(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.setState("img", statePresent)
	m.bytes.WithLabelValues("img").Set(1)
	m.size.WithLabelValues("img").Set(1)
	m.pullSeconds.WithLabelValues("img").Set(1)
	m.failures.WithLabelValues("img", reasonOther).Inc()
	m.pulls.WithLabelValues("img").Inc()
	m.repulls.WithLabelValues("img").Inc()
	touchS3Metrics(t, reg)
	featuretest.MetricsREADME(t, reg, "README.md", "nodeagent_imagewarm_")
}

// TestReadyReportsProgress: /readyz's reason names each required image
// not in yet and where it stands; optional ones never block.
func TestReadyReportsProgress(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Images = []ImageConfig{{Ref: "a", Required: true}, {Ref: "b", Required: true}, {Ref: "c"}}
	w, err := New(cfg, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Ready(); !errors.Is(err, errNotStarted) {
		t.Errorf("Ready before Run = %v", err)
	}
	w.setRunning(nil)
	now := time.Now()
	w.images[0].set(func(s *imageState) {
		s.state, s.done, s.total, s.started = statePulling, 50e6, 200e6, now.Add(-3*time.Second)
	})
	w.images[1].set(func(s *imageState) {
		s.state, s.reason, s.err, s.attempts, s.retryAt = stateFailed, reasonUnauthorized, errors.New("401 Unauthorized"), 2, now.Add(4*time.Second)
	})
	err = w.Ready()
	for _, want := range []string{"docker.io/library/a:latest pulling 50.0 MB of 200.0 MB", "docker.io/library/b:latest failed (unauthorized, 2 attempts"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Ready = %v, want it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "library/c") {
		t.Errorf("an optional image blocks: %v", err)
	}
	for _, s := range w.images[:2] {
		s.set(func(s *imageState) { s.warmed = true })
	}
	if err := w.Ready(); err != nil {
		t.Errorf("Ready with the required images warmed: %v", err)
	}
}
