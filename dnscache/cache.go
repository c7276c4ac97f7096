package dnscache

import (
	"encoding/binary"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// entry is one cached answer, immutable once stored except for its atomics,
// so readers use it after dropping the shard lock.
type entry struct {
	// key and wire share one allocation.
	key string
	// wire is the packed answer (ID 0, no OPT) without its question, which
	// is the key's and is copied from the query when answering.
	wire string
	// ttls are the offset and (capped) value of each record's TTL.
	ttls   []ttlSlot
	expire int64 // unix nanoseconds
	stale  int64 // serve-stale until
	zone   *zone
	// reqs counts answers from this entry, per protocol (udp, tcp); shared
	// by every entry with the same zone, type and rcode.
	reqs *[2]prometheus.Counter
	// reqsOf made reqs: an entry handed over from the previous instance
	// (see takeOver) counts on the current one's metrics instead.
	reqsOf *metrics

	ttl         uint32
	hits        atomic.Int32
	rcode       uint8
	good        bool // NOERROR or NXDOMAIN: may be served stale, never replaced by SERVFAIL
	extended    bool // a stale entry made fresh for staleAnswerTTL (see extend)
	prefetching atomic.Bool

	// The shard's lock guards the list links and the segment.
	prev, next *entry
	protected  bool
}

func (e *entry) size() int {
	return len(e.key) + len(e.wire) + 8*len(e.ttls) + 180 // struct and map overhead
}

// extend returns a copy of e, which was just served stale, that is fresh
// until expire with every TTL at most ttl seconds (RFC 8767's stale answer
// TTL): queries until then are answered from it instead of each trying the
// failing upstreams again.
func (e *entry) extend(expire int64, ttl uint32) *entry {
	ttls := make([]ttlSlot, len(e.ttls))
	for i, t := range e.ttls {
		ttls[i] = ttlSlot{off: t.off, ttl: ttl}
	}
	return &entry{
		key: e.key, wire: e.wire, ttls: ttls, expire: expire, stale: e.stale, zone: e.zone, reqs: e.reqs, reqsOf: e.reqsOf,
		ttl: ttl, rcode: e.rcode, good: e.good, extended: true,
	}
}

// remaining is the seconds left before expiry at now, rounded up: a fresh
// entry never shows TTL 0.
func (e *entry) remaining(now int64) uint32 {
	if now >= e.expire {
		return 0
	}
	return uint32((e.expire - now + int64(time.Second) - 1) / int64(time.Second))
}

const nShards = 16

// protectedShare is the part of a shard's entries the protected segment may
// hold (percent).
const protectedShare = 80

// store is a sharded, segmented LRU (SLRU) bounded by entries and bytes. A
// new entry starts in the probationary segment and moves to the protected
// one when it is asked for again; eviction takes the probationary segment's
// least recently used first. So a burst of names asked once (a crawler, an
// ndots:5 search list gone wrong, a miss flood) churns the probationary
// segment and leaves the entries that clients keep asking for in place.
type store struct {
	seed     maphash.Seed
	shards   [nShards]shard
	maxN     int
	maxProt  int
	maxBytes int

	entries, bytes atomic.Int64
	evictions      atomic.Int64
}

type shard struct {
	mu sync.Mutex
	m  map[string]*entry
	// Sentinels of the two segments' lists: head.next is the most recent.
	prob, prot entry
	n, protN   int
	bytes      int
}

func newStore(maxEntries, maxBytes int) *store {
	maxN := max(maxEntries/nShards, 1)
	s := &store{seed: maphash.MakeSeed(), maxN: maxN, maxProt: maxN * protectedShare / 100, maxBytes: max(maxBytes/nShards, 4096)}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.m = make(map[string]*entry)
		sh.prob.next, sh.prob.prev = &sh.prob, &sh.prob
		sh.prot.next, sh.prot.prev = &sh.prot, &sh.prot
	}
	return s
}

func (s *store) shard(key []byte) *shard {
	return &s.shards[maphash.Bytes(s.seed, key)%nShards]
}

// pushFront links e at the front of the list headed by head.
func pushFront(head, e *entry) {
	e.next, e.prev = head.next, head
	head.next.prev = e
	head.next = e
}

func detach(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

// get returns the entry for key, fresh or stale, or nil, and marks it used:
// an entry asked for again is protected. Entries past their stale window
// are dropped.
func (s *store) get(key []byte, now int64) *entry {
	sh := s.shard(key)
	sh.mu.Lock()
	e := sh.m[string(key)]
	if e != nil {
		if now >= e.stale {
			s.unlink(sh, e)
			e = nil
		} else if sh.prot.next != e {
			detach(e)
			if !e.protected {
				e.protected = true
				sh.protN++
			}
			pushFront(&sh.prot, e)
			s.demote(sh)
		}
	}
	sh.mu.Unlock()
	return e
}

// demote moves the protected segment's least recently used entries back to
// probation while the segment is over its share.
func (s *store) demote(sh *shard) {
	for sh.protN > s.maxProt && sh.prot.prev != &sh.prot {
		e := sh.prot.prev
		detach(e)
		e.protected = false
		sh.protN--
		pushFront(&sh.prob, e)
	}
}

// put stores e unless it is a failure and a good entry (fresh or stale) is
// already there. It reports whether e was stored. An entry replacing one
// keeps its segment.
func (s *store) put(e *entry, now int64) bool {
	sh := s.shard([]byte(e.key))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	protected := false
	if old := sh.m[e.key]; old != nil {
		if !e.good && old.good && now < old.stale {
			return false
		}
		protected = old.protected
		s.unlink(sh, old)
	}
	sh.m[e.key] = e
	if protected {
		e.protected = true
		sh.protN++
		pushFront(&sh.prot, e)
	} else {
		pushFront(&sh.prob, e)
	}
	sz := e.size()
	sh.n++
	sh.bytes += sz
	s.entries.Add(1)
	s.bytes.Add(int64(sz))
	for sh.n > s.maxN || sh.bytes > s.maxBytes {
		victim := sh.prob.prev
		if victim == &sh.prob || victim == e {
			victim = sh.prot.prev
		}
		if victim == &sh.prot || victim == e {
			break
		}
		s.unlink(sh, victim)
		s.evictions.Add(1)
	}
	return true
}

func (s *store) unlink(sh *shard, e *entry) {
	delete(sh.m, e.key)
	detach(e)
	if e.protected {
		sh.protN--
	}
	sz := e.size()
	sh.n--
	sh.bytes -= sz
	s.entries.Add(-1)
	s.bytes.Add(-int64(sz))
}

// sweep drops entries past their stale window.
func (s *store) sweep(now int64) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, e := range sh.m {
			if now >= e.stale {
				s.unlink(sh, e)
			}
		}
		sh.mu.Unlock()
	}
}

// ttlPolicy turns an upstream answer into cache lifetimes.
type ttlPolicy struct {
	success, denial, min, servfail, stale time.Duration
}

func (p ttlPolicy) fromConfig(c CacheConfig) ttlPolicy {
	return ttlPolicy{success: c.SuccessTTL, denial: c.DenialTTL, min: c.MinTTL, servfail: c.ServfailTTL, stale: c.StaleTTL}
}

// lifetime returns how long m may be cached and whether it is a good answer;
// 0 means do not cache.
func (p ttlPolicy) lifetime(m *dns.Msg) (ttl time.Duration, good bool) {
	if m.Truncated {
		return 0, false
	}
	switch m.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeServerFailure:
		return p.servfail, false
	default:
		return 0, false
	}
	negative := m.Rcode == dns.RcodeNameError || len(m.Answer) == 0
	if negative {
		// RFC 2308 section 5: the SOA's TTL, at most its MINIMUM field.
		var soa *dns.SOA
		for _, rr := range m.Ns {
			if s, ok := rr.(*dns.SOA); ok {
				soa = s
				break
			}
		}
		if soa == nil {
			return 0, true // no SOA: no negative caching
		}
		t := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		return clampTTL(t, p.min, p.denial), true
	}
	t := time.Duration(1<<31-1) * time.Second
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			t = min(t, time.Duration(rr.Header().Ttl)*time.Second)
		}
	}
	return clampTTL(t, p.min, p.success), true
}

func clampTTL(t, lo, hi time.Duration) time.Duration {
	return max(min(t, hi), lo)
}

// newEntry packs m (the answer to the question named by key) for the cache.
func newEntry(key []byte, m *dns.Msg, ttl time.Duration, good bool, stale time.Duration, now int64) (*entry, error) {
	c := *m
	c.Id = 0
	c.Compress = true
	c.Question = []dns.Question{{Name: m.Question[0].Name, Qtype: m.Question[0].Qtype, Qclass: m.Question[0].Qclass}}
	c.Question[0].Name = dns.CanonicalName(c.Question[0].Name)
	c.Extra = make([]dns.RR, 0, len(m.Extra))
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			c.Extra = append(c.Extra, rr)
		}
	}
	c.Rcode = m.Rcode & 0xf
	wire, err := c.Pack()
	if err != nil {
		return nil, err
	}
	ttls, err := rrTTLs(wire)
	if err != nil {
		return nil, err
	}
	secs := uint32(ttl / time.Second)
	for i := range ttls {
		ttls[i].ttl = min(ttls[i].ttl, secs)
	}
	// Drop the question: header, then everything after it. Offsets stay
	// valid because every answer puts back a question of the same length.
	qend := headerLen + len(key) - 1 // name, type and class; the key's last byte is flags
	if qend > len(wire) || string(wire[headerLen:qend]) != string(key[:len(key)-1]) {
		return nil, errors.New("packed question does not match the key")
	}
	data := string(key) + string(wire[:headerLen]) + string(wire[qend:])
	e := &entry{
		key: data[:len(key)], wire: data[len(key):], ttls: ttls, rcode: uint8(c.Rcode), good: good,
		expire: now + int64(ttl), stale: now + int64(ttl), ttl: secs,
	}
	if good {
		e.stale += int64(stale)
	}
	return e, nil
}

// appendAnswer writes e as the answer to q (raw query req) at now. With
// staleTTL > 0 every TTL is set to it (a stale answer).
func appendAnswer(dst []byte, e *entry, req []byte, q *query, now int64, staleTTL uint32, bufSize int) []byte {
	dst = append(dst[:0], e.wire[:headerLen]...)
	// The query's question, in its case: same wire length as the key's.
	dst = append(dst, req[headerLen:headerLen+q.qlen+4]...)
	dst = append(dst, e.wire[headerLen:]...)
	binary.BigEndian.PutUint16(dst, q.id)
	// Opcode QUERY, never authoritative; TC only as the upstream set it (an
	// answer truncated even over TCP is passed on, never cached).
	dst[2] = flagQR | e.wire[2]&flagTC
	if q.rd {
		dst[2] |= flagRD
	}
	dst[3] = flagRA | byte(e.rcode)
	if e.wire[3]&flagAD != 0 && (q.do || req[3]&flagAD != 0) {
		dst[3] |= flagAD
	}
	if q.cd {
		dst[3] |= flagCD
	}
	rem := e.remaining(now)
	for _, s := range e.ttls {
		t := min(s.ttl, rem)
		if staleTTL > 0 {
			t = staleTTL
		}
		binary.BigEndian.PutUint32(dst[s.off:], t)
	}
	if q.edns {
		dst = appendOPT(dst, bufSize, q.do, 0)
	}
	return dst
}

// truncate shrinks an answer that does not fit a UDP client's buffer: as many
// whole records as fit, with TC set (RFC 2181 section 9).
func truncate(resp []byte, size int) []byte {
	m := new(dns.Msg)
	if err := m.Unpack(resp); err != nil {
		return errorResponseFromMsg(resp)
	}
	m.Truncate(size)
	out, err := m.Pack()
	if err != nil || len(out) > size {
		return errorResponseFromMsg(resp)
	}
	return out
}

// errorResponseFromMsg keeps the header and question and sets TC.
func errorResponseFromMsg(resp []byte) []byte {
	off, err := skipName(resp, headerLen)
	if err != nil || off+4 > len(resp) {
		off = headerLen - 4
	}
	out := append([]byte(nil), resp[:off+4]...)
	out[2] |= flagTC
	for i := 6; i < headerLen; i++ {
		out[i] = 0
	}
	return out
}
