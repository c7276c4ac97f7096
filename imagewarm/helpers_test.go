package imagewarm

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/imagewarm/internal/testbed"
)

func TestMain(m *testing.M) {
	closeInheritedOnExec()
	goleak.VerifyTestMain(m,
		// go-containerregistry's pushes keep idle keep-alive connections in
		// http.DefaultTransport; they are not the warmer's.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// closeInheritedOnExec marks the fds the test binary inherited (a lock
// fd of `flock LOCK go test`) close-on-exec: a FUSE daemon or server a
// test starts, outliving a test killed on timeout, holds none of them.
func closeInheritedOnExec() {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// env is a registry and the certs.d directory pointing containerd at it.
type env struct {
	t      *testing.T
	ctx    context.Context
	dir    string
	reg    *testbed.Registry
	certsD string
}

// needRealComponents skips, with the reason, when root or the Debian
// packages are missing (imagewarm/hack/prereqs.sh installs them).
func needRealComponents(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (containerd, overlayfs); run the tests as root")
	}
	if b := testbed.Missing("containerd", "runc", "docker-registry"); b != "" {
		t.Skipf("needs %s in PATH (imagewarm/hack/prereqs.sh installs it)", b)
	}
}

func newEnv(t *testing.T, htpasswd string) *env {
	t.Helper()
	needRealComponents(t)
	dir := t.TempDir()
	t.Cleanup(func() { unmountBelow(dir) })
	reg, err := testbed.NewRegistry(filepath.Join(dir, "registry"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(reg.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	reg.Htpasswd = htpasswd
	if err := reg.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	e := &env{t: t, ctx: t.Context(), dir: dir, reg: reg, certsD: filepath.Join(dir, "certs.d")}
	if err := testbed.WriteHosts(e.certsD, reg.Addr, "http://"+reg.Addr); err != nil {
		t.Fatal(err)
	}
	return e
}

// unmountBelow detaches mounts a test left below dir before TempDir's
// removal (CRI's or the unpacker's temporary overlay mounts).
func unmountBelow(dir string) {
	(&testbed.Containerd{Dir: dir}).Stop()
}

func (e *env) containerd(name string, discard bool) *testbed.Containerd {
	e.t.Helper()
	c := testbed.NewContainerd(filepath.Join(e.dir, name), e.certsD)
	c.Discard = discard
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := c.Start(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Stop)
	return c
}

// running is a Warmer started on a containerd.
type running struct {
	w    *Warmer
	reg  *prometheus.Registry
	stop func()
}

func (e *env) warm(c *testbed.Containerd, imgs []ImageConfig, mutate func(*Config)) *running {
	e.t.Helper()
	cfg := DefaultConfig()
	cfg.Enabled = true
	cfg.ContainerdSocket = c.Socket
	cfg.Images = imgs
	cfg.Retry.InitialBackoff = 100 * time.Millisecond
	cfg.Retry.MaxBackoff = time.Second
	if mutate != nil {
		mutate(cfg)
	}
	reg := prometheus.NewRegistry()
	w, err := New(cfg, agent.Deps{Metrics: reg, Exec: hostexec.Exec{}})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return &running{w: w, reg: reg, stop: stop}
}

// waitState waits until image i is in state (checking every 20 ms: the
// warmer publishes no events to wait on), failing after timeout.
func waitState(t *testing.T, w *Warmer, i int, state string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := w.images[i]
		s.mu.Lock()
		got := s.state
		s.mu.Unlock()
		if got == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("image %s: state %s after %s, want %s (%s)", s.label(), got, timeout, state, s.describe(time.Now()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantReason reports an error unless image i's failure reason is want.
func wantReason(t *testing.T, w *Warmer, i int, want string) {
	t.Helper()
	s := w.images[i]
	s.mu.Lock()
	got, err := s.reason, s.err
	s.mu.Unlock()
	if got != want {
		t.Errorf("%s: reason %q (%v), want %s", s.label(), got, err, want)
	}
}

// dump is everything a pull leaves in containerd's k8s.io namespace,
// without timestamps: image records, snapshots, content labels.
type dump struct {
	Images    []string
	Snapshots []string
	Content   []string
}

func dumpContainerd(t *testing.T, c *testbed.Containerd, snapshotter string) dump {
	t.Helper()
	cd, err := dialContainerd(c.Socket, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cd.close()
	cd.useSnapshotter(snapshotter)
	ctx := namespaces.WithNamespace(t.Context(), "k8s.io")
	var d dump
	imgs, err := cd.images.(imageStore).List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range imgs {
		d.Images = append(d.Images, fmt.Sprintf("%s -> %s %s %d annotations=%v labels=%v", i.Name, i.Target.Digest, i.Target.MediaType, i.Target.Size, i.Target.Annotations, sortedMap(i.Labels)))
	}
	err = cd.snapshot.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		d.Snapshots = append(d.Snapshots, fmt.Sprintf("%s kind=%s parent=%s labels=%v", info.Name, info.Kind, info.Parent, sortedMap(info.Labels)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = cd.content.Walk(ctx, func(info content.Info) error {
		d.Content = append(d.Content, fmt.Sprintf("%s %d labels=%v", info.Digest, info.Size, sortedMap(info.Labels)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(d.Images)
	sort.Strings(d.Snapshots)
	sort.Strings(d.Content)
	return d
}

func sortedMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s,", k, m[k])
	}
	return b.String()
}

// throttle is a TCP proxy to a registry that sends at most rate bytes/s to
// the client and counts what it sent; Cut closes every connection.
type throttle struct {
	ln    net.Listener
	to    string
	rate  int64
	sent  atomic.Int64
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newThrottle(t *testing.T, to string, rate int64) *throttle {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &throttle{ln: ln, to: to, rate: rate}
	p.wg.Go(p.serve)
	t.Cleanup(func() { ln.Close(); p.Cut(); p.wg.Wait() })
	return p
}

func (p *throttle) Addr() string { return p.ln.Addr().String() }

func (p *throttle) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Go(func() { io.Copy(up, c); up.Close() })
		p.wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
					p.sent.Add(int64(n))
					time.Sleep(time.Duration(int64(n) * int64(time.Second) / p.rate))
				}
				if err != nil {
					break
				}
			}
			c.Close()
		})
	}
}

// Cut closes every proxied connection, as a registry that died would.
func (p *throttle) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func testDeps() agent.Deps {
	return agent.Deps{Metrics: prometheus.NewRegistry(), Exec: hostexec.Exec{}}
}
