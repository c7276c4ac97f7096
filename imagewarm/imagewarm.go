package imagewarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sync/semaphore"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodeagent/nodeagent/agent"
)

// Name is the feature's name: config section, log attribute, metric subsystem.
const Name = "imagewarm"

var errNotStarted = errors.New("not started")

// Warmer is the image pre-pull feature.
type Warmer struct {
	cfg    *Config
	deps   agent.Deps
	log    *slog.Logger
	m      *metrics
	images []*imageState
	creds  *creds
	s3     *s3Mounts

	// Set by Run.
	cri       criSettings
	regDirs   []string
	downloads *semaphore.Weighted
	blobs     *contentDir // nil: blobs stream over gRPC
	// slots bounds the images pulled at once; each slot has its own blob
	// stream connection.
	slots chan int

	mu      sync.Mutex
	running error // nil while running
}

var (
	_ agent.Feature      = (*Warmer)(nil)
	_ agent.ReadyChecker = (*Warmer)(nil)
)

// New validates cfg and allocates; it starts nothing.
func New(cfg *Config, deps agent.Deps) (*Warmer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("imagewarm: register metrics: %w", err)
	}
	w := &Warmer{cfg: cfg, deps: deps, log: log, m: m, running: errNotStarted,
		creds: &creds{exec: deps.Exec, now: time.Now, cache: map[string]cachedAuth{}}}
	if w.s3, err = w.newS3(); err != nil {
		return nil, err
	}
	for _, ic := range cfg.Images {
		s, err := newImageState(ic)
		if err != nil {
			return nil, err // Validate parsed it already
		}
		w.images = append(w.images, s)
		m.setState(s.label(), statePending)
	}
	if cfg.Credentials.Secret != "" {
		ns, name, _ := strings.Cut(cfg.Credentials.Secret, "/")
		w.creds.secret = w.secretSource(ns, name)
	}
	return w, nil
}

// Name implements agent.Feature.
func (w *Warmer) Name() string { return Name }

// Ready returns nil once every required image has been present in this
// process (later removals are pulled again but do not un-ready the node);
// otherwise it says, per image, where the pull stands.
func (w *Warmer) Ready() error {
	w.mu.Lock()
	err := w.running
	w.mu.Unlock()
	if err != nil {
		return err
	}
	if missing := notReady(w.images, time.Now()); missing != "" {
		return fmt.Errorf("required images not in yet: %s", missing)
	}
	return w.s3.ready()
}

func (w *Warmer) setRunning(err error) {
	w.mu.Lock()
	w.running = err
	w.mu.Unlock()
}

// Run connects to containerd, reads the CRI's settings, then keeps every
// image present until ctx is done. Images and records stay when it stops.
func (w *Warmer) Run(ctx context.Context) error {
	defer w.setRunning(errNotStarted)
	ctx, stopS3 := w.startS3(ctx)
	defer stopS3()
	if len(w.images) == 0 {
		w.setRunning(nil)
		<-ctx.Done()
		return nil
	}
	if err := w.setup(); err != nil {
		return err
	}
	sock := w.deps.Host.Path(w.cfg.ContainerdSocket)
	c, err := dialContainerd(sock, min(w.cfg.MaxConcurrentImages, len(w.images)))
	if err != nil {
		return fmt.Errorf("imagewarm: %w", err)
	}
	defer c.close()
	ctx = withContainerdLog(namespaces.WithNamespace(ctx, w.cfg.Namespace), w.log)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cri, err := readCRISettings(sctx, c.conn)
	cancel()
	if err != nil {
		return fmt.Errorf("imagewarm: %w", err)
	}
	if w.cfg.Snapshotter != "" {
		cri.Snapshotter = w.cfg.Snapshotter
	}
	w.cri = cri
	c.useSnapshotter(cri.Snapshotter)
	w.regDirs = w.registryDirs(cri)
	w.blobs = w.contentDir(ctx, c, cri)
	if w.blobs != nil {
		w.m.direct.Set(1)
	} else {
		w.m.direct.Set(0)
	}
	w.downloads = semaphore.NewWeighted(int64(w.cfg.MaxConcurrentDownloads))
	w.slots = make(chan int, w.cfg.MaxConcurrentImages)
	for i := range w.cfg.MaxConcurrentImages {
		w.slots <- i
	}
	w.log.Info("warming images", "images", len(w.images), "snapshotter", cri.Snapshotter, "directBlobWrite", w.blobs != nil,
		"discardUnpackedLayers", cri.DiscardUnpackedLayers, "registryConfig", w.regDirs)
	w.setRunning(nil)

	var wg sync.WaitGroup
	for _, s := range w.images {
		wg.Go(func() { w.keep(ctx, c, s) })
	}
	wg.Wait()
	return nil
}

// contentDir is where blobs are written directly (blobWrite: direct), or
// nil when containerd would not see them there (the reason is logged).
func (w *Warmer) contentDir(ctx context.Context, c *ctrd, cri criSettings) *contentDir {
	if w.cfg.BlobWrite != blobWriteDirect {
		return nil
	}
	dir := w.cfg.ContentDir
	if dir == "" {
		if cri.RootDir == "" {
			w.log.Warn("streaming blobs over gRPC", "reason", "the CRI runtime status names no containerdRootDir; set imagewarm.contentDir")
			return nil
		}
		dir = filepath.Join(cri.RootDir, contentDirName)
	}
	d := &contentDir{dir: w.deps.Host.Path(dir)}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := d.probe(ctx, c.content); err != nil {
		w.log.Warn("streaming blobs over gRPC", "contentDir", dir, "reason", err)
		return nil
	}
	return d
}

// setup reads the credential provider config (a bad one fails Run, so the
// supervisor reports and retries it).
func (w *Warmer) setup() error {
	cc := w.cfg.Credentials
	if cc.ProviderConfig == "" {
		return nil
	}
	ps, err := loadProviderConfig(w.deps.Host.Path(cc.ProviderConfig))
	if err != nil {
		return fmt.Errorf("imagewarm: %w", err)
	}
	w.creds.providers = ps
	w.creds.binDir = w.deps.Host.Path(cc.ProviderBinDir)
	return nil
}

// keep makes s present, retrying failures with jittered exponential
// backoff, then checks it again every recheckInterval (jittered).
func (w *Warmer) keep(ctx context.Context, c *ctrd, s *imageState) {
	backoff := w.cfg.Retry.InitialBackoff
	for ctx.Err() == nil {
		err := w.ensure(ctx, c, s)
		wait := jitter(w.cfg.RecheckInterval)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = jitter(backoff)
			backoff = min(2*backoff, w.cfg.Retry.MaxBackoff)
			w.failed(s, err, wait)
		} else {
			backoff = w.cfg.Retry.InitialBackoff
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter spreads d over [0.8d, 1.2d): a fleet of nodes never retries in step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// ensure checks s and pulls it when something is missing.
func (w *Warmer) ensure(ctx context.Context, c *ctrd, s *imageState) error {
	ok, err := w.present(ctx, c, s)
	if err != nil {
		return err
	}
	if ok {
		w.markPresent(s, 0, false)
		return nil
	}
	var slot int
	select {
	case slot = <-w.slots:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { w.slots <- slot }()
	start := time.Now()
	var wasWarmed bool
	s.set(func(s *imageState) {
		wasWarmed = s.warmed
		s.state, s.done, s.total, s.started = statePulling, 0, 0, start
	})
	w.m.setState(s.label(), statePulling)
	w.log.Info("pulling image", "image", s.label())
	pctx, cancel := context.WithTimeout(ctx, w.cfg.PullTimeout)
	defer cancel()
	if err := w.pull(pctx, c, s, slot); err != nil {
		return err
	}
	if wasWarmed {
		w.m.repulls.WithLabelValues(s.label()).Inc()
	}
	w.markPresent(s, time.Since(start), true)
	return nil
}

func (w *Warmer) markPresent(s *imageState, took time.Duration, pulled bool) {
	var first bool
	var done, total int64
	s.set(func(s *imageState) {
		first = !s.warmed
		s.state, s.reason, s.err, s.warmed, s.attempts = statePresent, "", nil, true, 0
		if pulled {
			s.lastPull = took
			s.total = max(s.total, s.done)
		}
		done, total = s.done, s.total
		s.lastNotice = ""
	})
	l := s.label()
	w.m.setState(l, statePresent)
	if !pulled {
		if first {
			w.log.Info("image already present", "image", l)
		}
		return
	}
	w.m.pulls.WithLabelValues(l).Inc()
	w.m.bytes.WithLabelValues(l).Set(float64(done))
	w.m.size.WithLabelValues(l).Set(float64(total))
	w.m.pullSeconds.WithLabelValues(l).Set(took.Seconds())
	w.m.duration.Observe(took.Seconds())
	w.log.Info("image pulled", "image", l, "bytes", done, "duration", took.Round(time.Millisecond))
	if k := w.deps.Kube; k != nil {
		k.Event(corev1.EventTypeNormal, "ImageWarmed", "Pull", "%s pulled in %s (%s)", l, took.Round(100*time.Millisecond), mb(done))
	}
}

// failed records a failed attempt: state, metric, log, and an Event when
// the reason changed.
func (w *Warmer) failed(s *imageState, err error, retry time.Duration) {
	reason := classify(err)
	var notice bool
	var attempts int
	s.set(func(s *imageState) {
		s.state, s.reason, s.err, s.retryAt = stateFailed, reason, err, time.Now().Add(retry)
		s.attempts++
		attempts = s.attempts
		notice = s.lastNotice != reason
		s.lastNotice = reason
	})
	l := s.label()
	w.m.setState(l, stateFailed)
	w.m.failures.WithLabelValues(l, reason).Inc()
	w.log.Warn("image pull failed", "image", l, "reason", reason, "attempts", attempts, "retryIn", retry.Round(time.Millisecond), "err", err)
	if k := w.deps.Kube; k != nil && notice {
		k.Event(corev1.EventTypeWarning, "ImageWarmFailed", "Pull", "%s: %s: %v", l, reason, err)
	}
}
