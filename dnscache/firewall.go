package dnscache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nodeagent/nodeagent/agent/hostexec"
)

// fwRule is one conntrack-bypass or accept rule, the same in both modes:
//
//	raw prerouting:  daddr A dport P        notrack
//	raw output:      saddr A sport P        notrack
//	raw output:      daddr A dport P        notrack
//	filter input:    daddr A dport P        accept
//	filter output:   saddr A sport P        accept
//
// for each served address A, protocol udp and tcp, and port P (node-local-dns's
// rules, kubernetes/dns cmd/node-cache/app/cache_app.go).
type fwRule struct {
	raw   bool   // raw table (notrack) or filter table (accept)
	chain string // PREROUTING, OUTPUT or INPUT
	src   bool   // match the source address and port instead of the destination
	addr  netip.Addr
	proto string // udp or tcp
	port  int
}

func (r fwRule) String() string {
	table, dir, verdict := "filter", "d", "accept"
	if r.raw {
		table, verdict = "raw", "notrack"
	}
	if r.src {
		dir = "s"
	}
	return fmt.Sprintf("%s %s %saddr %s %s %sport %d %s", table, r.chain, dir, r.addr, r.proto, dir, r.port, verdict)
}

func firewallRules(addrs []netip.Addr, port int) []fwRule {
	var out []fwRule
	for _, a := range addrs {
		for _, p := range []string{"udp", "tcp"} {
			out = append(out,
				fwRule{raw: true, chain: "PREROUTING", addr: a, proto: p, port: port},
				fwRule{raw: true, chain: "OUTPUT", src: true, addr: a, proto: p, port: port},
				fwRule{raw: true, chain: "OUTPUT", addr: a, proto: p, port: port},
				fwRule{chain: "INPUT", addr: a, proto: p, port: port},
				fwRule{chain: "OUTPUT", src: true, addr: a, proto: p, port: port},
			)
		}
	}
	return out
}

// nftFirewall keeps a table of our own (family inet) holding the rules. Its
// base chains run at raw priority (before conntrack) and filter priority.
type nftFirewall struct {
	table string
	netns int // -1: the current namespace
}

func (f *nftFirewall) conn() (*nftables.Conn, error) {
	if f.netns >= 0 {
		return nftables.New(nftables.WithNetNSFd(f.netns))
	}
	return nftables.New()
}

var nftChains = []struct {
	name string
	hook *nftables.ChainHook
	prio *nftables.ChainPriority
	raw  bool
	rule string // fwRule.chain
}{
	{"raw-prerouting", nftables.ChainHookPrerouting, nftables.ChainPriorityRaw, true, "PREROUTING"},
	{"raw-output", nftables.ChainHookOutput, nftables.ChainPriorityRaw, true, "OUTPUT"},
	{"filter-input", nftables.ChainHookInput, nftables.ChainPriorityFilter, false, "INPUT"},
	{"filter-output", nftables.ChainHookOutput, nftables.ChainPriorityFilter, false, "OUTPUT"},
}

// ensure makes the table hold exactly rules. When it already does, nothing is
// written; otherwise the table is replaced in one atomic transaction, so the
// rules are never missing while it happens.
func (f *nftFirewall) ensure(_ context.Context, rules []fwRule) (changed bool, err error) {
	c, err := f.conn()
	if err != nil {
		return false, err
	}
	table := &nftables.Table{Name: f.table, Family: nftables.TableFamilyINet}
	if f.matches(c, table, rules) {
		return false, nil
	}
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	for _, ch := range nftChains {
		chain := c.AddChain(&nftables.Chain{Name: ch.name, Table: table, Type: nftables.ChainTypeFilter, Hooknum: ch.hook, Priority: ch.prio})
		for _, r := range rules {
			if r.raw == ch.raw && r.chain == ch.rule {
				c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: nftExprs(r), UserData: []byte(r.String())})
			}
		}
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("nftables: replace table inet %s: %w", f.table, err)
	}
	return true, nil
}

// matches reports whether the table's chains hold exactly the wanted rules,
// compared by the description each rule carries as user data.
func (f *nftFirewall) matches(c *nftables.Conn, table *nftables.Table, rules []fwRule) bool {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false
	}
	found := 0
	for _, ch := range nftChains {
		var chain *nftables.Chain
		for _, have := range chains {
			if have.Table.Name == table.Name && have.Name == ch.name {
				chain = have
			}
		}
		if chain == nil || chain.Hooknum == nil || *chain.Hooknum != *ch.hook || chain.Priority == nil || *chain.Priority != *ch.prio {
			return false
		}
		found++
		have, err := c.GetRules(table, chain)
		if err != nil {
			return false
		}
		var want [][]byte
		for _, r := range rules {
			if r.raw == ch.raw && r.chain == ch.rule {
				want = append(want, []byte(r.String()))
			}
		}
		if len(have) != len(want) {
			return false
		}
		for i := range have {
			if !bytes.Equal(have[i].UserData, want[i]) || len(have[i].Exprs) != len(nftExprs(rules[0])) {
				return false
			}
		}
	}
	return found == len(nftChains)
}

// remove deletes the table if it exists.
func (f *nftFirewall) remove(ctx context.Context) error {
	// A failed look-up is not a missing table: only ENOENT says it is
	// gone. Other failures are tried again a few times, then reported.
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
		var gone bool
		if gone, err = f.removeOnce(); err == nil && gone {
			return nil
		}
	}
	return err
}

// removeOnce deletes the table; gone reports that it no longer exists.
func (f *nftFirewall) removeOnce() (gone bool, err error) {
	c, err := f.conn()
	if err != nil {
		return false, err
	}
	if _, err := c.ListTableOfFamily(f.table, nftables.TableFamilyINet); errors.Is(err, unix.ENOENT) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("nftables: look up table inet %s: %w", f.table, err)
	}
	c.DelTable(&nftables.Table{Name: f.table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("nftables: delete table inet %s: %w", f.table, err)
	}
	_, err = c.ListTableOfFamily(f.table, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return true, nil
	}
	return false, fmt.Errorf("nftables: table inet %s still there after its deletion (%v)", f.table, err)
}

func nftExprs(r fwRule) []expr.Any {
	nfproto, addrOff, addrLen := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if r.addr.Is6() {
		nfproto, addrOff, addrLen = unix.NFPROTO_IPV6, 24, 16
	}
	portOff := uint32(2)
	if r.src {
		addrOff -= addrLen // saddr precedes daddr in both headers
		portOff = 0
	}
	l4 := byte(unix.IPPROTO_UDP)
	if r.proto == "tcp" {
		l4 = unix.IPPROTO_TCP
	}
	var verdict expr.Any = &expr.Verdict{Kind: expr.VerdictAccept}
	if r.raw {
		verdict = &expr.Notrack{}
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.addr.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(r.port))},
		verdict,
	}
}

// iptFirewall keeps the same rules with iptables/ip6tables (whatever backend
// the host's binaries use), each tagged with a comment.
type iptFirewall struct {
	comment string
	exec    hostexec.Runner
}

func (f *iptFirewall) args(r fwRule, op string) (bin string, args []string) {
	bin = "iptables"
	if r.addr.Is6() {
		bin = "ip6tables"
	}
	table, target := "filter", "ACCEPT"
	if r.raw {
		table, target = "raw", "NOTRACK"
	}
	addrFlag, portFlag := "-d", "--dport"
	if r.src {
		addrFlag, portFlag = "-s", "--sport"
	}
	return bin, []string{"-w", "5", "-t", table, op, r.chain, "-p", r.proto, addrFlag, r.addr.String(),
		portFlag, strconv.Itoa(r.port), "-m", "comment", "--comment", f.comment, "-j", target}
}

func (f *iptFirewall) ensure(ctx context.Context, rules []fwRule) (changed bool, err error) {
	for _, r := range rules {
		bin, args := f.args(r, "-C")
		if _, err := f.exec.Run(ctx, hostexec.Cmd{Name: bin, Args: args}); err == nil {
			continue
		} else if ee := (*hostexec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode != 1 {
			return changed, err
		}
		bin, args = f.args(r, "-I")
		if _, err := f.exec.Run(ctx, hostexec.Cmd{Name: bin, Args: args}); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}

func (f *iptFirewall) remove(ctx context.Context, rules []fwRule) error {
	var errs []error
	for _, r := range rules {
		for range 10 { // duplicates, if any
			bin, args := f.args(r, "-D")
			if _, err := f.exec.Run(ctx, hostexec.Cmd{Name: bin, Args: args}); err != nil {
				var ee *hostexec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode != 1 {
					errs = append(errs, err)
				}
				break
			}
		}
	}
	return errors.Join(errs...)
}
