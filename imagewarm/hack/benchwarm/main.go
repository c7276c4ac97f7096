// Command benchwarm is imagewarm's benchmark (make bench-imagewarm): five
// images from a local registry, pulled into an empty containerd each round
// by the agent, by `ctr images pull` one after another, and by CRI
// PullImage of all five at once (kubelet with serializeImagePulls: false),
// alternating the order between rounds. It prints seconds, MB/s, CPU and
// the agent's peak RSS, medians over the rounds, and the ratios.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodeagent/nodeagent/imagewarm/internal/testbed"
)

func main() {
	agentBin := flag.String("agent", "bin/nodeagent", "the agent binary")
	rounds := flag.Int("rounds", 3, "rounds (each method once per round)")
	layerMB := flag.Int64("layer-mb", 5, "MB per layer")
	layers := flag.Int64("layers", 13, "layers per image")
	flag.Parse()
	if err := run(*agentBin, *rounds, *layerMB<<20, *layers); err != nil {
		fmt.Fprintln(os.Stderr, "benchwarm:", err)
		os.Exit(1)
	}
}

type sample struct {
	secs, cpu float64 // wall seconds; CPU seconds of the client and containerd
	rssMB     float64 // the agent's peak RSS (agent only)
}

const nImages = 5

func run(agentBin string, rounds int, layerBytes, layers int64) error {
	ctx := context.Background()
	if b := testbed.Missing("containerd", "runc", "docker-registry", "ctr"); b != "" {
		return fmt.Errorf("needs %s (imagewarm/hack/prereqs.sh)", b)
	}
	dir, err := os.MkdirTemp("", "benchwarm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	reg, err := testbed.NewRegistry(filepath.Join(dir, "registry"))
	if err != nil {
		return err
	}
	os.MkdirAll(reg.Dir, 0o755)
	if err := reg.Start(ctx); err != nil {
		return err
	}
	defer reg.Stop()
	certsD := filepath.Join(dir, "certs.d")
	if err := testbed.WriteHosts(certsD, reg.Addr, "http://"+reg.Addr); err != nil {
		return err
	}

	t0 := time.Now()
	refs := make([]string, nImages)
	var total int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for i := range nImages {
		wg.Go(func() {
			img, err := testbed.RandomImage(layerBytes, layers, "linux", "amd64")
			if err == nil {
				refs[i] = fmt.Sprintf("%s/bench/spark-%d:v1", reg.Addr, i)
				_, err = testbed.Push(ctx, refs[i], img, nil)
			}
			var size int64
			if err == nil {
				size, err = imageSize(img)
			}
			mu.Lock()
			defer mu.Unlock()
			total += size
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	mb := float64(total) / 1e6
	fmt.Printf("images: %d x %d layers, %.0f MB compressed in all (pushed in %s)\n", nImages, layers, mb, time.Since(t0).Round(time.Second))

	methods := []struct {
		name string
		pull func(context.Context, *testbed.Containerd) (sample, error)
	}{
		{"nodeagent imagewarm", func(ctx context.Context, c *testbed.Containerd) (sample, error) {
			return pullAgent(ctx, agentBin, c, refs, dir)
		}},
		{"ctr images pull, sequential", func(ctx context.Context, c *testbed.Containerd) (sample, error) {
			return pullCtr(ctx, c, refs, certsD)
		}},
		{"CRI PullImage x5 concurrent", func(ctx context.Context, c *testbed.Containerd) (sample, error) {
			return pullCRI(ctx, c, refs)
		}},
	}
	results := make([][]sample, len(methods))
	for r := range rounds {
		for k := range methods {
			m := (k + r) % len(methods) // alternate the order
			if only := os.Getenv("BENCH_ONLY"); only != "" && !strings.Contains(only, strconv.Itoa(m)) {
				continue
			}
			c := testbed.NewContainerd(filepath.Join(dir, fmt.Sprintf("ctrd-%d-%d", r, m)), certsD)
			prof := os.Getenv("BENCH_PROFILE")
			if prof != "" {
				c.Debug = filepath.Join(c.Dir, "debug.sock")
			}
			os.MkdirAll(c.Dir, 0o755)
			if err := c.Start(ctx); err != nil {
				return err
			}
			var profDone chan struct{}
			if prof != "" {
				profDone = profile(c.Debug, filepath.Join(prof, fmt.Sprintf("containerd-%d-%d.pprof", r, m)))
			}
			s, err := methods[m].pull(ctx, c)
			if profDone != nil {
				<-profDone
			}
			c.Stop()
			os.RemoveAll(c.Dir)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, methods[m].name, err)
			}
			fmt.Printf("round %d  %-30s %6.2f s  %6.1f MB/s  CPU %5.1f s\n", r+1, methods[m].name, s.secs, mb/s.secs, s.cpu)
			results[m] = append(results[m], s)
		}
	}

	med := func(xs []sample, f func(sample) float64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	if len(results[0]) == 0 || slices.ContainsFunc(results, func(r []sample) bool { return len(r) == 0 }) {
		return nil // BENCH_ONLY: the rounds above are the figures
	}
	agentSecs := med(results[0], func(s sample) float64 { return s.secs })
	fmt.Printf("\nmedians over %d rounds, %.0f MB in %d images, empty containerd 1.6 (overlayfs) each round:\n", rounds, mb, nImages)
	fmt.Printf("%-30s %8s %8s %10s %12s %16s\n", "method", "seconds", "MB/s", "CPU s", "peak RSS", "agent / method")
	for m, meth := range methods {
		secs := med(results[m], func(s sample) float64 { return s.secs })
		cpu := med(results[m], func(s sample) float64 { return s.cpu })
		rss := "-"
		if m == 0 {
			rss = fmt.Sprintf("%.1f MB", slices.MaxFunc(results[m], func(a, b sample) int { return int(a.rssMB - b.rssMB) }).rssMB)
		}
		fmt.Printf("%-30s %8.2f %8.1f %10.1f %12s %15.2fx\n", meth.name, secs, mb/secs, cpu, rss, agentSecs/secs)
	}
	seq := med(results[1], func(s sample) float64 { return s.secs })
	cri := med(results[2], func(s sample) float64 { return s.secs })
	fmt.Printf("\ntargets: agent <= 0.6x sequential ctr: %.2fx %s; agent <= 1.0x concurrent CRI: %.2fx %s\n",
		agentSecs/seq, verdict(agentSecs/seq <= 0.6), agentSecs/cri, verdict(agentSecs/cri <= 1.0))
	return nil
}

// profile fetches a CPU profile of containerd (BENCH_PROFILE_SECS long)
// from its debug socket into file.
func profile(sock, file string) chan struct{} {
	done := make(chan struct{})
	secs := os.Getenv("BENCH_PROFILE_SECS")
	if secs == "" {
		secs = "3"
	}
	go func() {
		defer close(done)
		cl := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
		resp, err := cl.Get("http://containerd/debug/pprof/profile?seconds=" + secs)
		if err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(file)
		if err != nil {
			return
		}
		defer f.Close()
		io.Copy(f, resp.Body)
	}()
	return done
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// cpuSeconds is utime+stime of pid.
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ
}

func peakRSSMB(pid int) float64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func pullAgent(ctx context.Context, bin string, c *testbed.Containerd, refs []string, dir string) (sample, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "raid: {enabled: false}\ndnscache: {enabled: false}\ninterrupt: {enabled: false}\nconntrack: {enabled: false}\n")
	fmt.Fprintf(&b, "imagewarm:\n  enabled: true\n  containerdSocket: %s\n  images:\n", c.Socket)
	for _, r := range refs {
		fmt.Fprintf(&b, "  - {ref: %q, required: true}\n", r)
	}
	cfg := filepath.Join(c.Dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return sample{}, err
	}
	port, err := testbed.FreePort()
	if err != nil {
		return sample{}, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctrd0 := cpuSeconds(c.Pid())
	start := time.Now()
	level := "warn"
	if os.Getenv("BENCH_DEBUG") != "" {
		level = "info"
	}
	cmd := exec.CommandContext(ctx, bin, "--config", cfg, "--metrics-addr", addr, "--log-level", level, "--log-format", "text", "--node-name", "bench")
	logf, _ := os.Create(filepath.Join(dir, "agent.log"))
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return sample{}, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := start.Add(10 * time.Minute)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logf.Name())
			return sample{}, fmt.Errorf("agent not ready after 10m: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	secs := time.Since(start).Seconds()
	pid := cmd.Process.Pid
	if os.Getenv("BENCH_DEBUG") != "" {
		out, _ := os.ReadFile(logf.Name())
		fmt.Printf("agent started %s; CPU agent %.2f s, containerd %.2f s; log:\n%s\n", start.Format("15:04:05.000"), cpuSeconds(pid), cpuSeconds(c.Pid())-ctrd0, out)
	}
	return sample{secs: secs, cpu: cpuSeconds(pid) + cpuSeconds(c.Pid()) - ctrd0, rssMB: peakRSSMB(pid)}, nil
}

func pullCtr(ctx context.Context, c *testbed.Containerd, refs []string, certsD string) (sample, error) {
	ctrd0 := cpuSeconds(c.Pid())
	start := time.Now()
	var client float64
	for _, r := range refs {
		cmd := exec.CommandContext(ctx, "ctr", "--address", c.Socket, "--namespace", "k8s.io", "images", "pull", "--hosts-dir", certsD, r)
		if out, err := cmd.CombinedOutput(); err != nil {
			return sample{}, fmt.Errorf("ctr pull %s: %v: %s", r, err, out)
		}
		client += (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	return sample{secs: time.Since(start).Seconds(), cpu: client + cpuSeconds(c.Pid()) - ctrd0}, nil
}

func pullCRI(ctx context.Context, c *testbed.Containerd, refs []string) (sample, error) {
	conn, err := c.Dial()
	if err != nil {
		return sample{}, err
	}
	defer conn.Close()
	is := runtimeapi.NewImageServiceClient(conn)
	ctrd0 := cpuSeconds(c.Pid())
	self0 := cpuSeconds(os.Getpid())
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(refs))
	for i, r := range refs {
		wg.Go(func() {
			_, errs[i] = is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: r}})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return sample{}, err
	}
	secs := time.Since(start).Seconds()
	return sample{secs: secs, cpu: cpuSeconds(c.Pid()) - ctrd0 + cpuSeconds(os.Getpid()) - self0}, nil
}

// imageSize is the compressed size of img: manifest, config and layers.
func imageSize(img interface {
	Manifest() (*v1.Manifest, error)
	RawManifest() ([]byte, error)
}) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}
