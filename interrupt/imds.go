package interrupt

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// maxBody bounds what is read of one IMDS answer.
const maxBody = 64 << 10

// newIMDSClient returns an IMDSv2 client for cfg whose every HTTP request
// is counted in m by path and status. It does no I/O.
func newIMDSClient(cfg IMDSConfig, m *metrics) *imds.Client {
	tr := &http.Transport{
		Proxy:               nil, // IMDS is link-local: never through a proxy
		DialContext:         (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	opts := imds.Options{
		Endpoint:   cfg.Endpoint,
		HTTPClient: &countingClient{c: &http.Client{Transport: tr, Timeout: cfg.Timeout}, m: m},
		// One retry, soon: the next poll is a retry too. It also carries the
		// SDK's handling of a 401 (a token that expired or was revoked: it
		// drops the token and asks for a new one).
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 2
			o.MaxBackoff = 50 * time.Millisecond
			o.RateLimiter = ratelimit.None
		}),
		EnableFallback: aws.FalseTernary,
	}
	if cfg.AllowIMDSv1 {
		opts.EnableFallback = aws.TrueTernary
	}
	return imds.New(opts)
}

// countingClient counts every IMDS request, token requests and retries
// included, by path and status.
type countingClient struct {
	c *http.Client
	m *metrics
}

func (c *countingClient) Do(req *http.Request) (*http.Response, error) {
	path := strings.TrimPrefix(req.URL.Path, "/latest/")
	path = strings.TrimPrefix(path, "meta-data/")
	resp, err := c.c.Do(req)
	status := "error"
	switch {
	case err == nil:
		status = strconv.Itoa(resp.StatusCode)
	case isTimeout(err):
		status = "timeout"
	}
	c.m.requests.WithLabelValues(path, status).Inc()
	return resp, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// errNotFound: IMDS answered 404, meaning "no such notice".
var errNotFound = errors.New("not found")

// get reads one metadata path. A 404 is errNotFound.
func get(ctx context.Context, c *imds.Client, timeout time.Duration, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		var re interface{ HTTPStatusCode() int }
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
			return nil, errNotFound
		}
		return nil, err
	}
	defer out.Content.Close()
	return io.ReadAll(io.LimitReader(out.Content, maxBody))
}

// A noticeEvent is a notice appearing, or (withdrawn) disappearing.
type noticeEvent struct {
	notice    Notice
	withdrawn bool
}

// watcher polls the notice paths and reports changes.
type watcher struct {
	client   *imds.Client
	cfg      IMDSConfig
	m        *metrics
	log      *slog.Logger
	now      func() time.Time
	visible  map[string]Notice // by ID
	failures map[string]string // path -> the last error logged
}

func newWatcher(c *imds.Client, cfg IMDSConfig, m *metrics, log *slog.Logger) *watcher {
	return &watcher{client: c, cfg: cfg, m: m, log: log, now: time.Now,
		visible: map[string]Notice{}, failures: map[string]string{}}
}

// run polls every PollInterval (jittered by up to ±10%) until ctx is done.
func (w *watcher) run(ctx context.Context, out chan<- noticeEvent) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, ev := range w.poll(ctx) {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
		j := 0.9 + 0.2*rand.Float64()
		t.Reset(time.Duration(float64(w.cfg.PollInterval) * j))
	}
}

// poll reads the four paths at once and returns what appeared or
// disappeared since the last poll. A path that fails keeps its notices as
// they were: only a 404 withdraws one.
func (w *watcher) poll(ctx context.Context) []noticeEvent {
	type answer struct {
		body []byte
		err  error
	}
	answers := make([]answer, len(noticePaths))
	var wg sync.WaitGroup
	for i, p := range noticePaths {
		wg.Go(func() {
			b, err := get(ctx, w.client, w.cfg.Timeout, p)
			answers[i] = answer{b, err}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	now := w.now()
	var events []noticeEvent
	for i, p := range noticePaths {
		a := answers[i]
		if a.err != nil && !errors.Is(a.err, errNotFound) {
			w.failed(p, a.err)
			continue
		}
		w.recovered(p)
		var found []Notice
		if a.err == nil {
			var err error
			found, err = w.parse(p, a.body, now)
			if err != nil {
				w.m.badNotice(p, err)
				w.log.Warn("imds notice rejected", "path", p, "err", err, "body", truncate(a.body, 256))
				if len(found) == 0 {
					continue // a bad body withdraws nothing either
				}
			}
		}
		ids := map[string]bool{}
		for _, n := range found {
			ids[n.ID] = true
			if _, ok := w.visible[n.ID]; !ok {
				n.Seen = now
				w.visible[n.ID] = n
				events = append(events, noticeEvent{notice: n})
			}
		}
		for id, n := range w.visible {
			if pathOf(n.Kind) == p && !ids[id] {
				delete(w.visible, id)
				events = append(events, noticeEvent{notice: n, withdrawn: true})
			}
		}
	}
	return events
}

func (w *watcher) parse(path string, body []byte, now time.Time) ([]Notice, error) {
	switch path {
	case pathSpot:
		n, err := parseSpot(body, now)
		if err != nil {
			return nil, err
		}
		return []Notice{n}, nil
	case pathRebalance:
		n, err := parseRebalance(body)
		if err != nil {
			return nil, err
		}
		return []Notice{n}, nil
	case pathMaintenance:
		return parseMaintenance(body, now)
	case pathASG:
		if n, ok := parseASG(body); ok {
			return []Notice{n}, nil
		}
	}
	return nil, nil
}

// failed logs a path's failure when it differs from the last one logged,
// so a dead endpoint is one line, not one a second.
func (w *watcher) failed(path string, err error) {
	msg := err.Error()
	if w.failures[path] != msg {
		w.failures[path] = msg
		w.log.Warn("imds poll failed", "path", path, "err", err)
	}
}

func (w *watcher) recovered(path string) {
	if _, ok := w.failures[path]; ok {
		delete(w.failures, path)
		w.log.Info("imds poll recovered", "path", path)
	}
}

func pathOf(kind string) string {
	switch kind {
	case KindSpot:
		return pathSpot
	case KindRebalance:
		return pathRebalance
	case KindMaintenance:
		return pathMaintenance
	case KindASG:
		return pathASG
	}
	return ""
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
