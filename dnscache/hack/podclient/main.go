// Command podclient is the benchmark's pod: it looks names up the way glibc's
// getaddrinfo (AF_UNSPEC) does with a pod's resolv.conf, and prints how long
// each lookup took.
//
// For a name with fewer dots than -ndots it tries every -search domain in
// order, then the name itself (with as many dots or more, the name first,
// then the search list). Each candidate is an A and an AAAA query sent
// together from one UDP socket (glibc's default, without single-request);
// the lookup ends at the first candidate with an address in either answer,
// and moves on when both answers are NXDOMAIN or empty (res_nsearch goes on
// after HOST_NOT_FOUND and NO_DATA). A query unanswered within -timeout is
// sent again, -attempts times in all.
//
//	podclient -server 127.0.0.10:53 -search "default.svc.cluster.local svc.cluster.local cluster.local us-east-1.compute.internal" NAME...
//
// Output: one line per name, "NAME MICROSECONDS CANDIDATES ADDRESSES".
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

func main() {
	server := flag.String("server", "127.0.0.10:53", "the nameserver of resolv.conf (host:port)")
	search := flag.String("search", "default.svc.cluster.local svc.cluster.local cluster.local us-east-1.compute.internal", "the search line of resolv.conf, space separated")
	ndots := flag.Int("ndots", 5, "options ndots")
	timeout := flag.Duration("timeout", 5*time.Second, "options timeout")
	attempts := flag.Int("attempts", 2, "options attempts")
	flag.Parse()
	r := resolver{server: *server, search: strings.Fields(*search), ndots: *ndots, timeout: *timeout, attempts: *attempts}
	for _, name := range flag.Args() {
		start := time.Now()
		tried, addrs, err := r.lookup(name)
		us := time.Since(start).Microseconds()
		if err != nil {
			fmt.Fprintf(os.Stderr, "podclient: %s: %v\n", name, err)
			os.Exit(1)
		}
		fmt.Printf("%s %d %d %d\n", name, us, tried, addrs)
	}
}

type resolver struct {
	server   string
	search   []string
	ndots    int
	timeout  time.Duration
	attempts int
}

var errNotFound = errors.New("no address for any candidate")

// lookup returns how many candidates it asked and how many addresses the
// first one with an address had.
func (r resolver) lookup(name string) (tried, addrs int, err error) {
	name = strings.TrimSuffix(name, ".")
	var cands []string
	for _, d := range r.search {
		cands = append(cands, dns.Fqdn(name+"."+d))
	}
	if strings.Count(name, ".") >= r.ndots {
		cands = append([]string{dns.Fqdn(name)}, cands...)
	} else {
		cands = append(cands, dns.Fqdn(name))
	}
	for i, c := range cands {
		n, err := r.query(c)
		if err != nil {
			return i + 1, 0, fmt.Errorf("%s: %w", c, err)
		}
		if n > 0 {
			return i + 1, n, nil
		}
	}
	return len(cands), 0, errNotFound
}

// query sends A and AAAA for name together and returns the number of
// addresses in both answers.
func (r resolver) query(name string) (int, error) {
	conn, err := net.Dial("udp", r.server)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	dc := &dns.Conn{Conn: conn}
	var qs [2]*dns.Msg
	for i, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		qs[i] = new(dns.Msg)
		qs[i].SetQuestion(name, t)
	}
	var got [2]*dns.Msg
	for range r.attempts {
		for i, q := range qs {
			if got[i] == nil {
				if err := dc.WriteMsg(q); err != nil {
					return 0, err
				}
			}
		}
		conn.SetReadDeadline(time.Now().Add(r.timeout))
		for got[0] == nil || got[1] == nil {
			m, err := dc.ReadMsg()
			if err != nil {
				break // timed out: send what is missing again
			}
			for i, q := range qs {
				if m.Id == q.Id && len(m.Question) == 1 && m.Question[0].Qtype == q.Question[0].Qtype {
					got[i] = m
				}
			}
		}
		if got[0] != nil && got[1] != nil {
			break
		}
	}
	if got[0] == nil || got[1] == nil {
		return 0, errors.New("timed out")
	}
	n := 0
	for _, m := range got {
		switch m.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
		default:
			return 0, fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
		}
		for _, rr := range m.Answer {
			if t := rr.Header().Rrtype; t == dns.TypeA || t == dns.TypeAAAA {
				n++
			}
		}
	}
	return n, nil
}
