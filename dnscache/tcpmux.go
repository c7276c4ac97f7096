package dnscache

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// tcpMux pipelines queries over one TCP connection to an upstream (RFC 7766
// section 6.2.1): many queries in flight, answers matched by message ID, so a
// burst of misses costs no connection setup and no head-of-line waiting.
type tcpMux struct {
	conn net.Conn
	wmu  sync.Mutex // serializes writes

	mu      sync.Mutex
	pending map[uint16]chan *dns.Msg
	err     error // set once the connection failed; then it is out of upstream.muxes
}

// muxTarget is how many queries one connection carries before another is opened.
const muxTarget = 64

// errUpstreamClosed is returned for an upstream removed while a query to it
// was in flight.
var errUpstreamClosed = errors.New("upstream removed")

// mux returns a live connection to put a query on: the least loaded one,
// or a new one while fewer than upstream.maxConns are open or being dialled
// (counted under u.mu, so a burst of misses cannot open more); when every
// slot is being dialled it waits for one.
func (u *upstream) mux(ctx context.Context) (*tcpMux, error) {
	for {
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			return nil, errUpstreamClosed
		}
		var best *tcpMux
		bestN := 0
		for _, mx := range u.muxes {
			mx.mu.Lock()
			n, dead := len(mx.pending), mx.err != nil
			mx.mu.Unlock()
			if !dead && (best == nil || n < bestN) {
				best, bestN = mx, n
			}
		}
		full := len(u.muxes)+u.dialing >= max(u.max, 1)
		if best != nil && (bestN < muxTarget || full) {
			u.mu.Unlock()
			return best, nil
		}
		if full { // every slot is being dialled
			wait := u.changedLocked()
			u.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		u.dialing++
		u.mu.Unlock()

		d := net.Dialer{Timeout: u.timeout}
		conn, err := d.DialContext(ctx, "tcp", u.name)
		u.mu.Lock()
		u.dialing--
		u.signalLocked()
		if err != nil {
			u.mu.Unlock()
			if best != nil {
				return best, nil
			}
			return nil, err
		}
		if u.closed { // removed while dialling: its reader would outlive Run
			u.mu.Unlock()
			conn.Close()
			return nil, errUpstreamClosed
		}
		mx := &tcpMux{conn: conn, pending: map[uint16]chan *dns.Msg{}}
		u.muxes = append(u.muxes, mx)
		u.mu.Unlock()
		u.readers.Go(func() { u.readLoop(mx) })
		return mx, nil
	}
}

// changedLocked returns a channel closed at the next change of u.muxes or
// u.dialing.
func (u *upstream) changedLocked() <-chan struct{} {
	if u.changed == nil {
		u.changed = make(chan struct{})
	}
	return u.changed
}

func (u *upstream) signalLocked() {
	if u.changed != nil {
		close(u.changed)
		u.changed = nil
	}
}

// fail retires mx: first it is marked dead and taken out of u.muxes, so no
// query is put on it any more, then its connection is closed and the
// queries waiting on it are failed (and asked again on a live connection).
// Only the first call counts.
func (u *upstream) fail(mx *tcpMux, err error) {
	mx.mu.Lock()
	if mx.err != nil {
		mx.mu.Unlock()
		return
	}
	if err == nil {
		err = io.EOF
	}
	mx.err = err
	pending := mx.pending
	mx.pending = map[uint16]chan *dns.Msg{}
	mx.mu.Unlock()
	u.mu.Lock()
	if i := slices.Index(u.muxes, mx); i >= 0 {
		u.muxes = slices.Delete(u.muxes, i, i+1)
	}
	u.signalLocked()
	u.mu.Unlock()
	mx.conn.Close()
	for _, ch := range pending {
		close(ch)
	}
}

func (u *upstream) readLoop(mx *tcpMux) {
	var lenBuf [2]byte
	buf := make([]byte, 0, 4096)
	var err error
	for {
		if _, err = io.ReadFull(mx.conn, lenBuf[:]); err != nil {
			break
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err = io.ReadFull(mx.conn, buf); err != nil {
			break
		}
		m := new(dns.Msg)
		if m.Unpack(buf) != nil {
			continue
		}
		mx.mu.Lock()
		ch := mx.pending[m.Id]
		delete(mx.pending, m.Id)
		mx.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
	u.fail(mx, err)
}

var errConnClosed = errors.New("upstream closed the connection")

// tcpAttempts bounds how often one query is put on a connection that then
// closes before answering it.
const tcpAttempts = 16

// exchangeTCP sends m over a pipelined connection and waits for its answer.
// It sets m.Id. A query on a connection that closes before its answer is
// asked again on another one, up to tcpAttempts times while ctx lasts: an
// upstream closes connections after so many queries (miekg/dns's
// MaxTCPQueries, 128 by default) or when idle, and closing with queries
// unread resets the connection, which loses the answers already sent too.
// Asking again is harmless.
func (u *upstream) exchangeTCP(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	for attempt := 1; ; attempt++ {
		r, err := u.exchangeMux(ctx, m)
		if errors.Is(err, errConnClosed) && ctx.Err() == nil && attempt < tcpAttempts {
			continue
		}
		return r, err
	}
}

func (u *upstream) exchangeMux(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	mx, err := u.mux(ctx)
	if err != nil {
		return nil, err
	}
	ch := make(chan *dns.Msg, 1)
	mx.mu.Lock()
	if mx.err != nil {
		mx.mu.Unlock()
		return nil, errConnClosed
	}
	for {
		m.Id = uint16(rand.Uint32())
		if _, taken := mx.pending[m.Id]; !taken {
			break
		}
	}
	id := m.Id
	mx.pending[id] = ch
	mx.mu.Unlock()
	forget := func() {
		mx.mu.Lock()
		delete(mx.pending, id)
		mx.mu.Unlock()
	}

	wire, err := m.Pack()
	if err != nil {
		forget()
		return nil, err
	}
	frame := make([]byte, 2+len(wire))
	binary.BigEndian.PutUint16(frame, uint16(len(wire)))
	copy(frame[2:], wire)
	mx.wmu.Lock()
	mx.conn.SetWriteDeadline(time.Now().Add(u.timeout))
	_, err = mx.conn.Write(frame)
	mx.wmu.Unlock()
	if err != nil {
		u.fail(mx, err) // fails this query too, with everything pending
		return nil, errConnClosed
	}

	t := time.NewTimer(u.timeout)
	defer t.Stop()
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, errConnClosed
		}
		return r, nil
	case <-t.C:
		forget()
		return nil, timeoutError{}
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "upstream timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// close closes every connection, waits for their readers and keeps new
// ones from being opened: for an upstream removed from every zone, which a
// query in flight may still be using.
func (u *upstream) close() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	u.closeConns()
}

// closeConns closes every connection and waits for their readers.
func (u *upstream) closeConns() {
	u.mu.Lock()
	muxes := append([]*tcpMux(nil), u.muxes...)
	u.mu.Unlock()
	for _, mx := range muxes {
		mx.conn.Close()
	}
	u.readers.Wait()
}
