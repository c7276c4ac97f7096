package dnscache

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// server answers queries from the cache and the upstreams. It is shared by
// the UDP readers and the TCP server.
type server struct {
	cfg    *Config
	st     *store
	r      *router
	m      *metrics
	log    *slog.Logger
	policy ttlPolicy
	sf     singleflight.Group
	lnx    *localNX // local NXDOMAIN rules; nil when off

	// bg tracks the fetches that outlive a stale answer (see do); bgCtx
	// ends them.
	bg         sync.WaitGroup
	bgCtx      context.Context
	sem        chan struct{} // upstream queries in flight
	misses     chan missJob  // UDP misses for the worker pool
	prefetches chan *entry   // entries for the prefetch workers
}

func newServer(cfg *Config, st *store, r *router, m *metrics, log *slog.Logger) *server {
	return &server{
		cfg: cfg, st: st, r: r, m: m, log: log,
		policy:     ttlPolicy{}.fromConfig(cfg.Cache),
		sem:        make(chan struct{}, cfg.Upstream.MaxConcurrent),
		misses:     make(chan missJob, missQueue),
		prefetches: make(chan *entry, prefetchQueue),
		bgCtx:      context.Background(),
	}
}

// answer handles one query. On a cache hit, a malformed or refused query it
// returns the response appended to out. Otherwise it returns miss=true, and
// the expired entry for the key if there is one, and the caller runs
// resolve, off the reading goroutine for UDP.
func (s *server) answer(req []byte, proto int, q *query, out []byte) (resp []byte, miss bool, expired *entry) {
	qe := parseQuery(req, q)
	switch qe {
	case qeOK:
	case qeDrop:
		s.m.dropped.WithLabelValues(dropMalformed).Inc()
		return nil, false, nil
	default:
		rcode := map[queryError]int{qeFormErr: dns.RcodeFormatError, qeNotImp: dns.RcodeNotImplemented,
			qeRefused: dns.RcodeRefused, qeBadVers: dns.RcodeBadVers}[qe]
		s.m.request(nil, proto, q.qtype, rcode)
		return errorResponse(out, req, q, qe, rcode), false, nil
	}
	if q.qtype == dns.TypeANY {
		return s.answerANY(out, req, q, proto), false, nil
	}
	now := time.Now().UnixNano()
	e := s.st.get(q.key, now)
	if e == nil || now >= e.expire {
		if resp := s.localNXDOMAIN(out, req, q, proto, now); resp != nil {
			return resp, false, nil
		}
		return nil, true, e
	}
	if e.extended {
		s.m.stale.Inc()
	} else {
		s.m.hits.Inc()
	}
	resp = s.write(out, e, req, q, proto, now, false)
	if p := s.cfg.Cache.Prefetch; p.Enabled && e.good && e.hits.Add(1) >= int32(p.MinHits) &&
		uint64(e.remaining(now))*100 < uint64(e.ttl)*uint64(p.Percent) && e.prefetching.CompareAndSwap(false, true) {
		s.prefetch(e)
	}
	return resp, false, nil
}

// udpLimit is the largest answer q's client takes over proto: 512 bytes
// without EDNS, the client's and the cache's UDP sizes with it, unbounded
// over TCP.
func (q *query) udpLimit(proto, bufSize int) int {
	switch {
	case proto != protoUDP:
		return math.MaxInt
	case q.edns:
		return max(min(q.udpSize, bufSize), 512)
	}
	return 512
}

// write renders e for q and counts the request.
func (s *server) write(out []byte, e *entry, req []byte, q *query, proto int, now int64, stale bool) []byte {
	var staleTTL uint32
	if stale {
		staleTTL = uint32(s.cfg.Cache.StaleAnswerTTL / time.Second)
	}
	resp := appendAnswer(out, e, req, q, now, staleTTL, s.cfg.UDPBufferSize)
	if limit := q.udpLimit(proto, s.cfg.UDPBufferSize); len(resp) > limit {
		resp = truncate(resp, limit)
	}
	if e.reqs != nil && e.reqsOf == s.m {
		e.reqs[proto].Inc()
	} else {
		s.m.request(e.zone, proto, q.qtype, int(e.rcode))
	}
	return resp
}

// answerANY answers qtype ANY minimally (RFC 8482): one synthesized HINFO.
func (s *server) answerANY(out, req []byte, q *query, proto int) []byte {
	name, _, err := dns.UnpackDomainName(req, headerLen)
	if err != nil {
		return errorResponse(out, req, q, qeFormErr, dns.RcodeFormatError)
	}
	m := new(dns.Msg)
	m.Id = q.id
	m.Response, m.RecursionDesired, m.RecursionAvailable, m.CheckingDisabled = true, q.rd, true, q.cd
	m.Question = []dns.Question{{Name: name, Qtype: q.qtype, Qclass: q.qclass}}
	m.Answer = []dns.RR{&dns.HINFO{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeHINFO, Class: dns.ClassINET, Ttl: 8482}, Cpu: "RFC8482"}}
	if q.edns {
		m.SetEdns0(uint16(s.cfg.UDPBufferSize), q.do)
	}
	b, err := m.PackBuffer(out[:cap(out)])
	if err != nil {
		return errorResponse(out, req, q, qeFormErr, dns.RcodeServerFailure)
	}
	s.m.request(nil, proto, q.qtype, dns.RcodeSuccess)
	return b
}

// missQueue is how many UDP misses may wait for a worker; more are dropped
// (the client retries) and counted as overload.
const missQueue = 1024

// missWorkers is the size of the UDP miss pool: with pipelined upstream
// connections and about 1ms upstream latency, 64 workers carry some 60,000
// misses per second.
const missWorkers = 64

var errOverload = errors.New("too many upstream queries in flight")

// resolve answers a miss: one upstream query per key however many clients
// ask at once, stale data (from expired, which answer found) when every
// upstream fails or is too slow.
func (s *server) resolve(req []byte, proto int, q *query, expired *entry, out []byte) []byte {
	s.m.misses.Inc()
	res, err, shared := s.do(q.key, expired)
	if shared {
		s.m.coalesced.Inc()
	}
	now := time.Now().UnixNano()
	if err != nil {
		s.m.request(nil, proto, q.qtype, dns.RcodeServerFailure)
		return errorResponse(out, req, q, qeOK, dns.RcodeServerFailure)
	}
	f := res.(fetched)
	if f.stale {
		s.m.stale.Inc()
	}
	return s.write(out, f.e, req, q, proto, now, f.stale)
}

// do runs one fetch of key for however many callers ask at once. When an
// expired good entry is at hand and the upstreams take longer than
// cache.staleWait, it answers from that entry and lets the fetch finish in
// the background (RFC 8767's client response timer): the fetch's answer
// replaces the stale one in the cache.
func (s *server) do(key []byte, old *entry) (any, error, bool) {
	k := string(key)
	fetch := func() (any, error) { return s.fetch([]byte(k)) }
	wait := s.cfg.Cache.StaleWait
	if wait <= 0 || s.policy.stale <= 0 || old == nil || !old.good {
		return s.sf.Do(k, fetch)
	}
	ch := make(chan singleflight.Result, 1)
	s.bg.Go(func() {
		v, err, shared := s.sf.Do(k, fetch)
		ch <- singleflight.Result{Val: v, Err: err, Shared: shared}
	})
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.Val, r.Err, r.Shared
	case <-t.C:
		now := time.Now().UnixNano()
		if cur := s.st.get(key, now); cur != nil && now < cur.expire {
			return fetched{e: cur}, nil, false // refreshed meanwhile by another query
		}
		return s.serveStale(old, now), nil, false
	}
}

type fetched struct {
	e     *entry
	stale bool
}

// fetch asks the upstreams for key and caches the answer. On failure it
// returns the stale entry if there is one, else a SERVFAIL entry (cached for
// cache.servfailTTL unless a good entry exists).
func (s *server) fetch(key []byte) (fetched, error) {
	name, _, err := dns.UnpackDomainName(key, 0)
	if err != nil {
		return fetched{}, err
	}
	nl := len(key) - 5
	qtype := uint16(key[nl])<<8 | uint16(key[nl+1])
	qclass := uint16(key[nl+2])<<8 | uint16(key[nl+3])
	flags := key[nl+4]
	z := s.r.route(name)

	m := new(dns.Msg)
	m.Id = dns.Id()
	m.RecursionDesired = true
	m.CheckingDisabled = flags&keyFlagCD != 0
	m.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: qclass}}
	m.SetEdns0(uint16(s.cfg.UDPBufferSize), flags&keyFlagDO != 0)

	var r *dns.Msg
	select {
	case s.sem <- struct{}{}:
		if z == nil {
			err = errNoUpstream
		} else {
			ctx, cancel := context.WithTimeout(s.bgCtx, s.cfg.Upstream.Timeout*time.Duration(max(len(z.upstreams()), 1)))
			r, err = z.exchange(ctx, m)
			cancel()
		}
		<-s.sem
	default:
		err = errOverload
		s.m.dropped.WithLabelValues(dropOverload).Inc()
	}
	if err == nil && (len(r.Question) != 1 || r.Question[0].Qtype != qtype || !equalFoldName(r.Question[0].Name, name)) {
		err = errors.New("answer does not match the question")
	}
	now := time.Now().UnixNano()
	if err != nil || r.Rcode == dns.RcodeServerFailure {
		if old := s.st.get(key, now); old != nil && old.good && s.policy.stale > 0 {
			return s.serveStale(old, now), nil
		}
		if err != nil {
			s.log.Debug("upstream failed", "zone", zoneLabel(z), "name", name, "type", dns.TypeToString[qtype], "err", err)
			r = new(dns.Msg)
			r.Question = m.Question
			r.Rcode = dns.RcodeServerFailure
		}
	}
	ttl, good := s.policy.lifetime(r)
	if s.lnx != nil && err == nil {
		s.lnx.observe(key, r, ttl, now)
	}
	e, err := newEntry(key, r, ttl, good, s.policy.stale, now)
	if err != nil {
		return fetched{}, err
	}
	e.zone = z
	e.reqs, e.reqsOf = s.m.requestCounters(z, qtype, int(e.rcode)), s.m
	if ttl > 0 && !s.st.put(e, now) {
		// A SERVFAIL does not replace a good entry.
		if old := s.st.get(key, now); old != nil && old.good {
			return s.serveStale(old, now), nil
		}
	}
	return fetched{e: e}, nil
}

// serveStale answers from a good entry after the upstreams failed. An expired
// one is stored again, fresh for staleAnswerTTL (within its stale window), so
// that the next queries are hits rather than more upstream attempts.
func (s *server) serveStale(old *entry, now int64) fetched {
	if now < old.expire {
		return fetched{e: old} // still fresh: a prefetch failed
	}
	ttl := s.cfg.Cache.StaleAnswerTTL
	e := old.extend(min(now+int64(ttl), old.stale), uint32(ttl/time.Second))
	s.st.put(e, now)
	return fetched{e: e, stale: true}
}

// prefetchWorkers refresh entries in the background. They are few on
// purpose: names cached together expire together, and a goroutine per
// prefetch put hundreds of runnable goroutines ahead of the UDP readers (a
// 55 ms stall for the cache hits behind them, measured with one CPU). With
// pipelined upstream connections four workers refresh thousands of entries
// per second; what does not fit in the queue is prefetched on a later hit.
const (
	prefetchWorkers = 4
	prefetchQueue   = 1024
)

// prefetch queues e for a refresh; only one refresh per entry runs.
func (s *server) prefetch(e *entry) {
	select {
	case s.prefetches <- e:
		s.m.prefetches.Inc()
	default:
		e.prefetching.Store(false) // a later hit tries again
	}
}

// prefetchers refresh queued entries until stop closes; entries still
// queued then may be prefetched again by a later Run.
func (s *server) prefetchers(stop <-chan struct{}, wg *sync.WaitGroup) {
	for range prefetchWorkers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case e := <-s.prefetches:
					key := []byte(e.key)
					s.sf.Do(e.key, func() (any, error) { return s.fetch(key) })
				}
			}
		})
	}
}

// dropPrefetches empties the queue once the prefetchers have stopped.
func (s *server) dropPrefetches() {
	for {
		select {
		case e := <-s.prefetches:
			e.prefetching.Store(false)
		default:
			return
		}
	}
}

func equalFoldName(a, b string) bool {
	return dns.CanonicalName(a) == dns.CanonicalName(b)
}
