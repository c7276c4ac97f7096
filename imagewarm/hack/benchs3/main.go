// Command benchs3 is the S3 mount benchmark (make bench-s3). The agent
// binary mounts a bucket of a real S3 server (versitygw on loopback) with
// the s3fs driver, default check interval. It prints, side by side:
//
//   - heal: from kill -9 of the FUSE daemon (at a random point of the
//     agent's check cycle) to the first successful read through the
//     mount, p50/p99/max over the kills; the reference is the
//     same kill without the agent (the CSI driver's case, #576): the mount
//     stays dead (ENOTCONN) for the whole window;
//   - read throughput of a 50 MB object through the mount (cold: each
//     round reads an object not read before) against a direct S3 GET of
//     another such object from the same server (SigV4, net/http).
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/nodeagent/nodeagent/imagewarm/internal/testbed"
)

const (
	accessKey = "benchkey"
	secretKey = "benchsecret"
	objMB     = 50
)

func main() {
	agentBin := flag.String("agent", "bin/nodeagent", "the agent binary")
	vgw := flag.String("versitygw", "versitygw", "the versitygw binary")
	kills := flag.Int("kills", 20, "daemon kills")
	rounds := flag.Int("rounds", 3, "throughput rounds (one object each way per round)")
	window := flag.Duration("reference-window", 10*time.Second, "how long the reference (no agent) is watched after its kill")
	flag.Parse()
	if err := run(*agentBin, *vgw, *kills, *rounds, *window); err != nil {
		fmt.Fprintln(os.Stderr, "benchs3:", err)
		os.Exit(1)
	}
}

type bench struct {
	dir, endpoint, mnt, state string
}

func run(agentBin, vgw string, kills, rounds int, window time.Duration) error {
	if err := testbed.NeedRoot(); err != nil {
		return err
	}
	if b := testbed.Missing("s3fs", vgw); b != "" {
		return fmt.Errorf("needs %s (imagewarm/hack/prereqs.sh)", b)
	}
	dir, err := os.MkdirTemp("", "benchs3-")
	if err != nil {
		return err
	}
	if os.Getenv("BENCH_DEBUG") == "" {
		defer os.RemoveAll(dir)
	}
	b := &bench{dir: dir, mnt: filepath.Join(dir, "mnt", "libs"), state: filepath.Join(dir, "state")}
	data := filepath.Join(dir, "data", "libs", "jars")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(data, "probe.txt"), []byte("spark\n"), 0o644); err != nil {
		return err
	}
	obj := make([]byte, objMB<<20)
	for i := range 2 * rounds {
		if _, err := rand.Read(obj); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(data, fmt.Sprintf("big-%d.bin", i)), obj, 0o644); err != nil {
			return err
		}
	}
	port, err := testbed.FreePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv := exec.Command(vgw, "--port", addr, "posix", filepath.Join(dir, "data"))
	srv.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+accessKey, "ROOT_SECRET_KEY="+secretKey)
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	if err := waitDial(addr); err != nil {
		return err
	}
	b.endpoint = "http://" + addr
	defer b.cleanup()

	stop, err := b.startAgent(agentBin)
	if err != nil {
		return err
	}
	if err := waitRead(filepath.Join(b.mnt, "probe.txt"), time.Minute); err != nil {
		stop()
		return fmt.Errorf("first mount: %w", err)
	}

	// Heal: kill -9, time to the first good read.
	var heals []time.Duration
	for range kills {
		pid, err := b.waitDaemon(0)
		if err != nil {
			stop()
			return err
		}
		// A death at a random point of the agent's check cycle (right
		// after a heal the agent checks at once, then every ~2 s).
		time.Sleep(time.Duration(mrand.Int64N(int64(2500 * time.Millisecond))))
		killed := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			stop()
			return err
		}
		waitGone(pid)
		if os.Getenv("BENCH_DEBUG") != "" {
			_, err := readWithin(filepath.Join(b.mnt, "probe.txt"), time.Second)
			fmt.Printf("kill of %d: first read after it: %v (%s)\n", pid, err, time.Since(killed))
		}
		if err := waitRead(filepath.Join(b.mnt, "probe.txt"), 30*time.Second); err != nil {
			stop()
			return fmt.Errorf("heal: %w", err)
		}
		heals = append(heals, time.Since(killed))
		if _, err := b.waitDaemon(pid); err != nil {
			stop()
			return err
		}
	}

	// Throughput: cold objects through the mount and straight from S3.
	var viaMount, direct []float64
	for i := range rounds {
		mb, err := readMount(filepath.Join(b.mnt, fmt.Sprintf("big-%d.bin", 2*i)))
		if err != nil {
			stop()
			return err
		}
		viaMount = append(viaMount, mb)
		mb, err = b.getDirect(fmt.Sprintf("jars/big-%d.bin", 2*i+1))
		if err != nil {
			stop()
			return err
		}
		direct = append(direct, mb)
	}

	// Reference: no agent. Stop it (the mount stays), kill the daemon and
	// watch the mount for the window.
	stop()
	pid, err := b.daemon()
	if err != nil {
		return err
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid)
	refErr := waitRead(filepath.Join(b.mnt, "probe.txt"), window)

	slices.Sort(heals)
	fmt.Printf("S3 mount benchmark: s3fs driver against versitygw on loopback, agent check interval 2s (default, jittered)\n\n")
	fmt.Printf("%-44s %10s %10s %10s\n", "daemon kill -9 -> first good read", "p50", "p99", "max")
	fmt.Printf("%-44s %10s %10s %10s\n", fmt.Sprintf("nodeagent (%d kills)", len(heals)), pct(heals, 50), pct(heals, 99), heals[len(heals)-1].Round(time.Millisecond))
	ref := "healed?!"
	if refErr != nil {
		ref = fmt.Sprintf("still dead after %s (%s)", window, shortErr(refErr))
	}
	fmt.Printf("%-44s %s\n\n", "no agent (CSI driver's case, #576)", ref)
	fmt.Printf("%-44s %10s %10s\n", fmt.Sprintf("read %d MB, cold, MB/s (median of %d)", objMB, rounds), "median", "all")
	fmt.Printf("%-44s %10.1f %10s\n", "through the s3fs mount", median(viaMount), list(viaMount))
	fmt.Printf("%-44s %10.1f %10s\n", "direct S3 GET (SigV4, net/http)", median(direct), list(direct))
	fmt.Printf("%-44s %10.2f\n", "ratio mount / direct", median(viaMount)/median(direct))
	return nil
}

func (b *bench) startAgent(bin string) (func(), error) {
	cfg := fmt.Sprintf(`raid: {enabled: false}
dnscache: {enabled: false}
interrupt: {enabled: false}
conntrack: {enabled: false}
imagewarm:
  enabled: true
  s3Mounts:
    - {name: libs, bucket: libs, prefix: jars/, mountPath: %s, endpointURL: %s, region: us-east-1, readOnly: true, driver: s3fs}
  s3:
    allowedRoots: [%s]
    stateDir: %s
    namespace: %s
`, b.mnt, b.endpoint, filepath.Dir(b.mnt), b.state, namespace())
	f := filepath.Join(b.dir, "agent.yaml")
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	port, err := testbed.FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", f, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", logLevel(), "--log-format", "text", "--node-name", "bench")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+accessKey, "AWS_SECRET_ACCESS_KEY="+secretKey)
	logf, err := os.Create(filepath.Join(b.dir, "agent.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
	}, nil
}

// namespace: host when this process is in PID 1's mount namespace, else
// agent (a test machine whose init is out of reach).
func namespace() string {
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if pid1, _ := os.Readlink("/proc/1/ns/mnt"); pid1 == self {
		return "host"
	}
	return "agent"
}

// daemon is the PID in the agent's record.
func (b *bench) daemon() (int, error) {
	raw, err := os.ReadFile(filepath.Join(b.state, "libs.json"))
	if err != nil {
		return 0, err
	}
	var r struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return 0, err
	}
	return r.PID, nil
}

// waitDaemon waits until the agent's record names a daemon other than old
// (the record is written a moment after the mount answers).
func (b *bench) waitDaemon(old int) (int, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pid, err := b.daemon()
		if err == nil && pid > 0 && pid != old {
			return pid, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no new daemon recorded: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cleanup stops the daemon, unmounts and removes the daemons' cgroup when
// it is empty (the agent leaves both in place by design).
func (b *bench) cleanup() {
	if pid, err := b.daemon(); err == nil && pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid)
	}
	_ = exec.Command("umount", "-l", b.mnt).Run()
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/nodeagent-s3mounts")
	for _, cg := range append(cgs, "/sys/fs/cgroup/nodeagent-s3mounts") {
		// rmdir: only when empty; a daemon that just exited may hold it a moment.
		for i := 0; i < 50; i++ {
			if err := os.Remove(cg); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func waitDial(addr string) error {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw did not listen on %s: %w", addr, err)
		}
	}
}

// waitGone waits until pid has exited (reaped by init: its setsid parent).
func waitGone(pid int) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(b), ") Z ") {
			return
		}
	}
}

// waitRead reads path every 10 ms until a read returns its content.
func waitRead(path string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		got, err := readWithin(path, 2*time.Second)
		if err == nil && string(got) == "spark\n" {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("read %q", got)
			}
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readWithin reads path in a goroutine: a read of a dead mount may hang.
func readWithin(path string, d time.Duration) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	c := make(chan res, 1)
	go func() { b, err := os.ReadFile(path); c <- res{b, err} }()
	select {
	case r := <-c:
		return r.b, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("read %s: no answer in %s", path, d)
	}
}

func readMount(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	n, err := io.Copy(io.Discard, f)
	if err != nil {
		return 0, err
	}
	if n != objMB<<20 {
		return 0, fmt.Errorf("%s: read %d bytes", path, n)
	}
	return float64(n) / (1 << 20) / time.Since(start).Seconds(), nil
}

// getDirect is one path-style SigV4 GET of bucket libs, key, from the server.
func (b *bench) getDirect(key string) (float64, error) {
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.endpoint+"/libs/"+key, nil)
	if err != nil {
		return 0, err
	}
	empty := sha256.Sum256(nil)
	hash := hex.EncodeToString(empty[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	creds := aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hash, "s3", "us-east-1", time.Now()); err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("GET %s: %s: %s", key, resp.Status, msg)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, err
	}
	if n != objMB<<20 {
		return 0, fmt.Errorf("GET %s: %d bytes", key, n)
	}
	return float64(n) / (1 << 20) / time.Since(start).Seconds(), nil
}

func pct(d []time.Duration, p int) time.Duration {
	i := (len(d)*p + 99) / 100
	return d[max(0, min(len(d)-1, i-1))].Round(time.Millisecond)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func list(v []float64) string {
	var out []string
	for _, x := range v {
		out = append(out, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(out, ",")
}

func shortErr(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// logLevel is info with BENCH_DEBUG set (the agent's log stays in the temp dir).
func logLevel() string {
	if os.Getenv("BENCH_DEBUG") != "" {
		return "info"
	}
	return "warn"
}
