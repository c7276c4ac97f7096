package dnscache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nodeagent/nodeagent/agent/netnsrun"
	"github.com/nodeagent/nodeagent/agent/sockopt"
)

// udpRcvBuf absorbs bursts (hundreds of executors starting at once).
const udpRcvBuf = 4 << 20

// listeners are the sockets of one Run.
type listeners struct {
	udp []*net.UDPConn
	tcp []net.Listener
}

func listen(ns netns.NsHandle, addrs []netip.Addr, port int) (*listeners, error) {
	ls := &listeners{}
	err := netnsrun.Run(ns, func() error {
		lc := net.ListenConfig{Control: sockopt.ReusePort}
		for _, a := range addrs {
			ap := netip.AddrPortFrom(a, uint16(port)).String()
			pc, err := lc.ListenPacket(context.Background(), "udp", ap)
			if err != nil {
				return fmt.Errorf("listen udp %s: %w", ap, err)
			}
			uc := pc.(*net.UDPConn)
			if rc, err := uc.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) {
					if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpRcvBuf) != nil {
						unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, udpRcvBuf)
					}
				})
			}
			ls.udp = append(ls.udp, uc)
			l, err := lc.Listen(context.Background(), "tcp", ap)
			if err != nil {
				return fmt.Errorf("listen tcp %s: %w", ap, err)
			}
			ls.tcp = append(ls.tcp, l)
		}
		return nil
	})
	if err != nil {
		ls.close()
		return nil, err
	}
	return ls, nil
}

func (ls *listeners) close() {
	for _, c := range ls.udp {
		c.Close()
	}
	for _, l := range ls.tcp {
		l.Close()
	}
}

// detachUDP takes a socket out of its SO_REUSEPORT group's selection without
// closing it: a connected UDP socket is skipped when the kernel picks a socket
// for a new packet (reuseport_select_sock_by_hash), and it matches no real
// client. New queries go to the other processes' sockets while this one
// answers what it already queued, so a restart loses nothing.
func detachUDP(c *net.UDPConn) error {
	la, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return errors.New("not a UDP socket")
	}
	var sa unix.Sockaddr
	if ip4 := la.IP.To4(); ip4 != nil {
		s := &unix.SockaddrInet4{Port: 1}
		copy(s.Addr[:], ip4)
		sa = s
	} else {
		s := &unix.SockaddrInet6{Port: 1}
		copy(s.Addr[:], la.IP.To16())
		sa = s
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return err
	}
	return cerr
}

// drainIdle is how long a detached socket waits for queued queries.
const drainIdle = 50 * time.Millisecond

// serveUDP answers on c with one reader per CPU until stop closes; then it
// detaches c and drains what is queued.
func (s *server) serveUDP(c *net.UDPConn, readers int, stop <-chan struct{}) {
	u, err := newUDPSock(c)
	if err != nil {
		s.log.Error("udp socket unusable", "addr", c.LocalAddr().String(), "err", err)
		return
	}
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() { s.readUDP(u) })
	}
	<-stop
	if err := detachUDP(c); err != nil {
		s.log.Warn("udp detach failed, closing without drain", "addr", c.LocalAddr().String(), "err", err)
	}
	c.SetReadDeadline(time.Now().Add(drainIdle))
	wg.Wait()
}

func (s *server) readUDP(u *udpSock) {
	q := query{key: make([]byte, 0, 300)}
	b := u.batch(s.cfg.MaxQuerySize + 1)
	for {
		n, err := b.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || isTimeout(err) {
				return
			}
			continue
		}
		for i := range n {
			req := b.datagram(i)
			resp := s.handleQuery(req, protoUDP, &q, b.outs[i][:0], func(expired *entry) []byte {
				job := missJob{conn: u, from: b.peers[i], req: append([]byte(nil), req...), q: q, expired: expired}
				job.q.key = append([]byte(nil), q.key...)
				select {
				case s.misses <- job:
				default:
					s.m.dropped.WithLabelValues(dropOverload).Inc()
				}
				return nil
			})
			if resp != nil {
				b.reply(i, resp)
			}
		}
		b.flush()
	}
}

// handleQuery answers one query as read from the wire, over UDP or TCP
// alike: FORMERR when it is bigger than maxQuerySize, else what answer
// says, or on a miss what miss returns (given the expired entry, if any).
// nil means no answer.
func (s *server) handleQuery(req []byte, proto int, q *query, out []byte, miss func(expired *entry) []byte) []byte {
	if len(req) > s.cfg.MaxQuerySize {
		if len(req) < headerLen || parseQuery(req[:headerLen], q) == qeDrop {
			s.m.dropped.WithLabelValues(dropMalformed).Inc()
			return nil
		}
		s.m.request(nil, proto, 0, dns.RcodeFormatError)
		return errorResponse(out, req, q, qeFormErr, dns.RcodeFormatError)
	}
	resp, isMiss, expired := s.answer(req, proto, q, out)
	if isMiss {
		return miss(expired)
	}
	return resp
}

// missJob is a UDP query that needs an upstream.
type missJob struct {
	conn    *udpSock
	from    peer
	req     []byte
	q       query
	expired *entry // the key's expired entry, if any (see answer)
}

// missWorkers answer UDP misses. A fixed pool (rather than a goroutine per
// miss) keeps memory flat under a burst of new names; upstream queries are
// pipelined, so a few hundred workers keep thousands of queries per second in
// flight. They return once s.misses is closed and drained.
func (s *server) missWorkers(n int, wg *sync.WaitGroup) {
	for range n {
		wg.Go(func() {
			o := newUDPIO()
			for job := range s.misses {
				if resp := s.resolve(job.req, protoUDP, &job.q, job.expired, nil); resp != nil {
					o.writeTo(job.conn, resp, &job.from)
				}
			}
		})
	}
}
