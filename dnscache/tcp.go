package dnscache

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tcpIdleTimeout closes a client connection that asks nothing for this long
// (RFC 7766 section 6.2.3: seconds, not minutes).
const tcpIdleTimeout = 10 * time.Second

// tcpServer answers DNS over TCP (RFC 7766): length-prefixed queries read
// as bytes, so they get the same checks as UDP queries (parseQuery), and
// answered in order on each connection. At most maxConns client connections
// are open: a new one closes the one idle longest, or is closed itself when
// every one is busy.
type tcpServer struct {
	s        *server
	l        net.Listener
	maxConns int
	timeout  time.Duration // reading the rest of a query, writing an answer

	mu      sync.Mutex
	conns   map[*tcpConn]struct{}
	closing bool
	wg      sync.WaitGroup
}

type tcpConn struct {
	net.Conn
	idleSince atomic.Int64 // unix nanoseconds; 0 while a query is being answered
}

func newTCPServer(s *server, l net.Listener) *tcpServer {
	return &tcpServer{s: s, l: l, maxConns: s.cfg.MaxTCPConnections, timeout: s.cfg.Upstream.Timeout, conns: map[*tcpConn]struct{}{}}
}

// serve accepts until the listener is closed (see shutdown).
func (t *tcpServer) serve() {
	for {
		c, err := t.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: let it pass
			continue
		}
		tc := &tcpConn{Conn: c}
		tc.idleSince.Store(time.Now().UnixNano())
		t.mu.Lock()
		if t.closing {
			t.mu.Unlock()
			c.Close()
			return
		}
		if len(t.conns) >= t.maxConns && !t.closeOldestIdleLocked() {
			t.mu.Unlock()
			c.Close()
			t.s.m.dropped.WithLabelValues(dropOverload).Inc()
			continue
		}
		t.conns[tc] = struct{}{}
		t.s.m.tcpConns.Inc()
		t.wg.Add(1)
		t.mu.Unlock()
		go t.handle(tc)
	}
}

// closeOldestIdleLocked closes the connection idle longest, if one is idle.
func (t *tcpServer) closeOldestIdleLocked() bool {
	var oldest *tcpConn
	var since int64
	for c := range t.conns {
		if s := c.idleSince.Load(); s != 0 && (oldest == nil || s < since) {
			oldest, since = c, s
		}
	}
	if oldest == nil {
		return false
	}
	t.dropLocked(oldest)
	return true
}

// dropLocked forgets c and closes it; its handler ends on the closed connection.
func (t *tcpServer) dropLocked(c *tcpConn) {
	if _, ok := t.conns[c]; ok {
		delete(t.conns, c)
		t.s.m.tcpConns.Dec()
	}
	c.Close()
}

func (t *tcpServer) handle(c *tcpConn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		t.dropLocked(c)
		t.mu.Unlock()
	}()
	s := t.s
	var lenBuf [2]byte
	req := make([]byte, 0, 512)
	q := query{key: make([]byte, 0, 300)}
	for {
		c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		c.idleSince.Store(0)
		c.SetReadDeadline(time.Now().Add(t.timeout))
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if cap(req) < n {
			req = make([]byte, n)
		}
		req = req[:n]
		if _, err := io.ReadFull(c, req); err != nil {
			return
		}
		resp := s.handleQuery(req, protoTCP, &q, nil, func(expired *entry) []byte {
			return s.resolve(req, protoTCP, &q, expired, nil)
		})
		if resp != nil {
			frame := make([]byte, 2+len(resp))
			binary.BigEndian.PutUint16(frame, uint16(len(resp)))
			copy(frame[2:], resp)
			c.SetWriteDeadline(time.Now().Add(t.timeout))
			if _, err := c.Write(frame); err != nil {
				return
			}
		}
		t.mu.Lock()
		closing := t.closing
		t.mu.Unlock()
		if closing {
			return
		}
		c.idleSince.Store(time.Now().UnixNano())
	}
}

// shutdown stops accepting, closes the idle connections, lets the busy ones
// finish their answer and waits for them until ctx ends, then closes them.
func (t *tcpServer) shutdown(ctx context.Context) {
	t.mu.Lock()
	t.closing = true
	t.l.Close()
	for c := range t.conns {
		if c.idleSince.Load() != 0 {
			t.dropLocked(c)
		}
	}
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.mu.Lock()
		for c := range t.conns {
			t.dropLocked(c)
		}
		t.mu.Unlock()
		<-done
	}
}
