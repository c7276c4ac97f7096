package dnscache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// errNoUpstream is returned when a zone has no upstream to ask.
var errNoUpstream = errors.New("no upstream")

// upstream is one server queried over UDP (retrying truncated answers over
// TCP) or over reused TCP connections.
type upstream struct {
	addr    netip.AddrPort
	name    string // "IP:port", the metric label
	proto   string
	timeout time.Duration
	m       *metrics
	log     *slog.Logger

	fails   atomic.Int32
	down    atomic.Bool
	maxFail int32

	mu      sync.Mutex
	closed  bool          // removed: no new connection may be opened
	muxes   []*tcpMux     // live connections
	dialing int           // connections being dialled
	changed chan struct{} // closed when muxes or dialing change (see mux)
	max     int           // connections per upstream, live and dialling
	readers sync.WaitGroup
}

func newUpstream(addr netip.AddrPort, proto string, uc UpstreamConfig, m *metrics, log *slog.Logger) *upstream {
	u := &upstream{addr: addr, name: addr.String(), proto: proto, timeout: uc.Timeout, m: m, log: log, maxFail: int32(uc.MaxFails), max: uc.MaxConns}
	m.upstreamHealthy.WithLabelValues(u.name).Set(1)
	return u
}

// exchange sends m and returns the answer.
func (u *upstream) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	start := time.Now()
	var r *dns.Msg
	var err error
	if u.proto == ProtoUDP {
		r, err = u.exchangeUDP(ctx, m)
		if err == nil && r.Truncated {
			r, err = u.exchangeTCP(ctx, m)
		}
	} else {
		r, err = u.exchangeTCP(ctx, m)
	}
	rcode := "error"
	if err == nil {
		rcode = rcodeLabel(r.Rcode)
	} else if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		rcode = "timeout"
	}
	u.m.upstreamDuration.WithLabelValues(u.name, rcode).Observe(time.Since(start).Seconds())
	return r, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (u *upstream) exchangeUDP(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	c := dns.Client{Net: "udp", Timeout: u.timeout, UDPSize: 65535}
	r, _, err := c.ExchangeContext(ctx, m, u.name)
	return r, err
}

// succeeded and failed record the outcome of a query; each transition
// between up and down is logged once.
func (u *upstream) succeeded() {
	u.fails.Store(0)
	if u.down.CompareAndSwap(true, false) {
		u.m.upstreamHealthy.WithLabelValues(u.name).Set(1)
		u.log.Info("upstream up again", "upstream", u.name, "protocol", u.proto)
	}
}

func (u *upstream) failed(err error) {
	if u.fails.Add(1) >= u.maxFail && u.down.CompareAndSwap(false, true) {
		u.m.upstreamHealthy.WithLabelValues(u.name).Set(0)
		u.log.Warn("upstream down; tried last until a health check passes", "upstream", u.name, "protocol", u.proto,
			"consecutiveFailures", u.fails.Load(), "err", err)
	}
}

// probe checks a down upstream with a query for the root NS; any answer
// counts as alive.
func (u *upstream) probe(ctx context.Context) {
	m := new(dns.Msg)
	m.SetQuestion(".", dns.TypeNS)
	m.Id = dns.Id()
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	if _, err := u.exchange(ctx, m); err == nil {
		u.succeeded()
	}
}

// zone forwards the names below name to its upstreams.
type zone struct {
	name   string // canonical, e.g. "cluster.local."
	labels int
	ups    atomic.Pointer[[]*upstream]
}

func (z *zone) upstreams() []*upstream {
	if p := z.ups.Load(); p != nil {
		return *p
	}
	return nil
}

// exchange asks the zone's healthy upstreams in turn, starting at a random
// one; down upstreams are tried last. A transport error, REFUSED or SERVFAIL
// moves on to the next upstream (and counts against the one that failed);
// when every upstream fails, the last SERVFAIL is returned if there was one.
func (z *zone) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	ups := z.upstreams()
	if len(ups) == 0 {
		return nil, errNoUpstream
	}
	order := make([]*upstream, 0, len(ups))
	start := rand.IntN(len(ups))
	for i := range ups {
		if u := ups[(start+i)%len(ups)]; !u.down.Load() {
			order = append(order, u)
		}
	}
	for i := range ups {
		if u := ups[(start+i)%len(ups)]; u.down.Load() {
			order = append(order, u)
		}
	}
	var lastErr error
	var servfail *dns.Msg
	for _, u := range order {
		if ctx.Err() != nil {
			break
		}
		r, err := u.exchange(ctx, m)
		if err == nil && r.Rcode != dns.RcodeRefused && r.Rcode != dns.RcodeServerFailure {
			u.succeeded()
			return r, nil
		}
		if err == nil {
			if r.Rcode == dns.RcodeServerFailure {
				servfail = r
			}
			lastErr = fmt.Errorf("%s: %s", u.name, dns.RcodeToString[r.Rcode])
		} else {
			lastErr = fmt.Errorf("%s: %w", u.name, err)
		}
		u.failed(lastErr)
	}
	if servfail != nil {
		return servfail, nil // every upstream failed, one with SERVFAIL: pass it on
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return nil, lastErr
}

// down reports whether every upstream of the zone is down, and names them.
func (z *zone) down() (bool, []string) {
	ups := z.upstreams()
	names := make([]string, 0, len(ups))
	for _, u := range ups {
		if !u.down.Load() {
			return false, nil
		}
		names = append(names, u.name)
	}
	return len(ups) > 0, names
}

// router maps names to zones, longest zone first.
type router struct {
	zones []*zone
}

func newRouter(names []string) *router {
	r := &router{}
	for _, n := range names {
		n = dns.CanonicalName(n)
		r.zones = append(r.zones, &zone{name: n, labels: dns.CountLabel(n)})
	}
	sort.SliceStable(r.zones, func(i, j int) bool { return r.zones[i].labels > r.zones[j].labels })
	return r
}

// route returns the zone for a canonical name.
func (r *router) route(name string) *zone {
	for _, z := range r.zones {
		if z.name == "." || name == z.name || strings.HasSuffix(name, "."+z.name) {
			return z
		}
	}
	return nil
}

func (r *router) zone(name string) *zone {
	name = dns.CanonicalName(name)
	for _, z := range r.zones {
		if z.name == name {
			return z
		}
	}
	return nil
}

// all returns every upstream of every zone.
func (r *router) all() []*upstream {
	var out []*upstream
	for _, z := range r.zones {
		out = append(out, z.upstreams()...)
	}
	return out
}
