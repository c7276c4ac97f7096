// Package testbed starts the real components imagewarm's tests and
// benchmark run against: a private containerd (with its CRI plugin) and a
// private docker-registry, both in a temp dir and on 127.0.0.1, and builds
// test images with go-containerregistry.
package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Missing names the first binary of bins not on PATH ("" when all are).
func Missing(bins ...string) string {
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			return b
		}
	}
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Proc is a started child process.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func start(log string, name string, args ...string) (*Proc, error) {
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &Proc{cmd: cmd, done: make(chan struct{}), log: log}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

// Stop kills the process group and waits for it.
func (p *Proc) Stop() {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Log returns the tail of the process's output, for failure messages.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func waitFor(ctx context.Context, p *Proc, what string, ok func() bool) error {
	for !ok() {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %s", what, p.Log())
		case <-ctx.Done():
			return fmt.Errorf("%s not up: %w: %s", what, ctx.Err(), p.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Registry is a docker-registry (distribution 2.8) serving plain HTTP.
type Registry struct {
	Dir  string
	Addr string // 127.0.0.1:port
	// Htpasswd, when set before Start, requires basic auth (bcrypt file).
	Htpasswd string
	proc     *Proc
}

// NewRegistry prepares a registry storing below dir on a free port.
func NewRegistry(dir string) (*Registry, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	return &Registry{Dir: dir, Addr: fmt.Sprintf("127.0.0.1:%d", port)}, nil
}

// Start (re)starts the registry on its address and storage.
func (r *Registry) Start(ctx context.Context) error {
	auth := ""
	if r.Htpasswd != "" {
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", r.Htpasswd)
	}
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http:
  addr: %s
%s`, filepath.Join(r.Dir, "data"), r.Addr, auth)
	file := filepath.Join(r.Dir, "config.yml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := start(filepath.Join(r.Dir, "registry.log"), "docker-registry", "serve", file)
	if err != nil {
		return err
	}
	r.proc = p
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return waitFor(ctx, p, "docker-registry", func() bool {
		resp, err := http.Get("http://" + r.Addr + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200 || resp.StatusCode == 401
	})
}

// Stop stops the registry (its storage stays).
func (r *Registry) Stop() { r.proc.Stop() }

// Containerd is a private containerd 1.6+ with its CRI plugin.
type Containerd struct {
	Dir     string
	Socket  string
	CertsD  string // registry.config_path
	Discard bool   // discard_unpacked_layers
	// Debug, when set before Start, is the socket of containerd's debug
	// server (net/http/pprof at /debug/pprof/).
	Debug string
	proc  *Proc
}

// NewContainerd prepares a containerd below dir; certsD is its registry
// hosts directory.
func NewContainerd(dir, certsD string) *Containerd {
	return &Containerd{Dir: dir, Socket: filepath.Join(dir, "containerd.sock"), CertsD: certsD}
}

// Start writes the config and starts containerd, waiting for its socket.
func (c *Containerd) Start(ctx context.Context) error {
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = %[9]q
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    discard_unpacked_layers = %[6]t
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[7]q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[8]q
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Socket, c.Socket+".ttrpc",
		filepath.Join(c.Dir, "opt"), c.Discard, filepath.Join(c.Dir, "cni"), c.CertsD, c.Debug)
	file := filepath.Join(c.Dir, "config.toml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := start(filepath.Join(c.Dir, "containerd.log"), "containerd", "--config", file)
	if err != nil {
		return err
	}
	c.proc = p
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return waitFor(ctx, p, "containerd", func() bool {
		conn, err := net.Dial("unix", c.Socket)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
}

// Stop stops containerd and unmounts what it left below its root.
func (c *Containerd) Stop() {
	c.proc.Stop()
	c.unmountAll()
}

// unmountAll lazily unmounts every mount below the dir (overlay mounts of
// snapshots CRI or a test left).
func (c *Containerd) unmountAll() {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], c.Dir+"/") {
			syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}

// Log is containerd's output.
func (c *Containerd) Log() string { return c.proc.Log() }

// Dial opens a gRPC connection to the socket (containerd API and CRI).
func (c *Containerd) Dial() (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// WriteHosts makes certsD/<host>/hosts.toml send host's pulls to server
// (e.g. "http://127.0.0.1:5000"): how a plain-HTTP or mirrored registry is
// configured for containerd.
func WriteHosts(certsD, host, server string) error {
	dir := filepath.Join(certsD, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, server)
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644)
}

var errNotRoot = errors.New("needs root")

// NeedRoot returns an error when not running as root.
func NeedRoot() error {
	if os.Geteuid() != 0 {
		return errNotRoot
	}
	return nil
}

// Pid is containerd's process id (its CPU time is part of every pull).
func (c *Containerd) Pid() int { return c.proc.cmd.Process.Pid }
