package conntrack

import (
	"bufio"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file    string
		entries uint64
		want    map[string]uint64 // every counter the file has
		other   map[string]uint64
	}{
		{"nf_conntrack-3.10", 16, map[string]uint64{
			"searched": 0xa000 + 0xb000, "found": 0x300, "new": 0x30, "invalid": 4, "ignore": 0x900, "delete": 0x2e,
			"delete_list": 0x2e, "insert": 0x30, "insert_failed": 1, "drop": 3, "early_drop": 0, "error": 4,
			"expect_new": 0, "expect_create": 0, "expect_delete": 0}, nil},
		{"nf_conntrack-4.19", 1000, map[string]uint64{
			"searched": 0, "found": 0x3000, "new": 0, "invalid": 10, "ignore": 0, "delete": 0, "delete_list": 0,
			"insert": 0x300, "insert_failed": 10, "drop": 10, "early_drop": 2, "error": 1,
			"expect_new": 0, "expect_create": 0, "expect_delete": 0, "search_restart": 10}, nil},
		{"nf_conntrack-5.10", 1024, map[string]uint64{
			"clash_resolve": 0x33, "found": 0x200, "new": 0, "invalid": 2, "ignore": 0, "delete": 0, "delete_list": 0,
			"insert": 0x20, "insert_failed": 3, "drop": 0, "early_drop": 0, "error": 0,
			"expect_new": 0, "expect_create": 0, "expect_delete": 0, "search_restart": 0}, nil},
		{"nf_conntrack-6.18", 50000, map[string]uint64{
			"clash_resolve": 12, "found": 0x1a2b3 + 0x2b3c4, "new": 0, "invalid": 0x3a, "ignore": 0, "delete": 0,
			"chaintoolong": 4, "insert": 40000, "insert_failed": 6, "drop": 154, "early_drop": 15, "error": 2,
			"expect_new": 1, "expect_create": 3, "expect_delete": 4, "search_restart": 10}, nil},
		{"nf_conntrack-future", 1, map[string]uint64{
			"clash_resolve": 0, "found": 0, "new": 0, "invalid": 0, "ignore": 0, "delete": 0, "chaintoolong": 0,
			"insert": 1, "insert_failed": 0, "drop": 0, "early_drop": 0, "error": 0,
			"expect_new": 0, "expect_create": 0, "expect_delete": 0, "search_restart": 0},
			map[string]uint64{"bucket_resize": 2}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile("testdata/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			s, err := parseProcStat(string(data))
			if err != nil {
				t.Fatal(err)
			}
			if s.entries != tc.entries {
				t.Errorf("entries = %d, want %d", s.entries, tc.entries)
			}
			for i, d := range counterDefs {
				want, ok := tc.want[d.name]
				if s.has[i] != ok {
					t.Errorf("%s: present = %v, want %v", d.name, s.has[i], ok)
				}
				if s.counters[i] != want {
					t.Errorf("%s = %d, want %d", d.name, s.counters[i], want)
				}
			}
			if len(s.other) != len(tc.other) {
				t.Errorf("other = %v, want %v", s.other, tc.other)
			}
			for k, v := range tc.other {
				if s.other[k] != v {
					t.Errorf("other[%s] = %d, want %d", k, s.other[k], v)
				}
			}
		})
	}
}

func TestParseProcStatErrors(t *testing.T) {
	t.Parallel()
	for name, in := range map[string]string{
		"empty":        "",
		"header only":  "entries found\n",
		"no entries":   "found drop\n00000001 00000002\n",
		"short line":   "entries found drop\n00000001 00000002\n",
		"not hex":      "entries found\n00000001 0000000g\n",
		"extra values": "entries found\n00000001 00000002 00000003\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseProcStat(in); err == nil {
				t.Errorf("parseProcStat(%q): no error", in)
			}
		})
	}
}

// readEthtoolFixture turns `ethtool -S IFACE` output into the map the
// ETHTOOL_GSTATS ioctl yields.
func readEthtoolFixture(t *testing.T, name string) map[string]uint64 {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ": ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", name, sc.Text(), err)
		}
		m[k] = n
	}
	return m
}

func TestENAAllowances(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file string
		ok   bool
		want map[string]uint64
	}{
		{"ethtool-ena.txt", true, map[string]uint64{
			"bw_in_allowance_exceeded": 1021, "bw_out_allowance_exceeded": 7, "pps_allowance_exceeded": 33,
			"conntrack_allowance_exceeded": 2, "linklocal_allowance_exceeded": 4096, "conntrack_allowance_available": 131072}},
		// Drivers before 2.8 have no conntrack_allowance_available.
		{"ethtool-ena-old.txt", true, map[string]uint64{
			"bw_in_allowance_exceeded": 5, "bw_out_allowance_exceeded": 0, "pps_allowance_exceeded": 0,
			"conntrack_allowance_exceeded": 0, "linklocal_allowance_exceeded": 12}},
		{"ethtool-veth.txt", false, map[string]uint64{}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			s, ok := enaAllowances("eth0", readEthtoolFixture(t, tc.file))
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			for i, name := range enaCounterNames {
				want, has := tc.want[name]
				if s.has[i] != has || s.vals[i] != want {
					t.Errorf("%s = %d (present %v), want %d (present %v)", name, s.vals[i], s.has[i], want, has)
				}
			}
		})
	}
}

// TestDecodeCPUStats decodes per-CPU stats messages as a 6.x kernel sends
// them, with the attributes ti-mo/conntrack's Stats drops (clash_resolve,
// chaintoolong) and one this build does not know.
func TestDecodeCPUStats(t *testing.T) {
	t.Parallel()
	cpu := func(vals map[uint16]uint32) netlink.Message {
		ae := netlink.NewAttributeEncoder()
		ae.ByteOrder = binary.BigEndian
		for typ := uint16(1); typ <= 16; typ++ {
			if v, ok := vals[typ]; ok {
				ae.Uint32(typ, v)
			}
		}
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return netlink.Message{Data: append([]byte{unix.AF_UNSPEC, 0, 0, 0}, b...)}
	}
	msgs := []netlink.Message{
		cpu(map[uint16]uint32{2: 10, 4: 1, 8: 5, 9: 1, 10: 2, 11: 0, 12: 0, 13: 3, 14: 7, 15: 1, 16: 9}),
		cpu(map[uint16]uint32{2: 20, 4: 2, 8: 6, 9: 0, 10: 3, 11: 1, 12: 1, 13: 0, 14: 8, 15: 0, 16: 1}),
	}
	var s stats
	if err := decodeCPUStats(&s, msgs, 0); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"found": 30, "invalid": 3, "insert": 11, "insert_failed": 1, "drop": 5, "early_drop": 1,
		"error": 1, "search_restart": 3, "clash_resolve": 15, "chaintoolong": 1}
	for i, d := range counterDefs {
		w, ok := want[d.name]
		if s.has[i] != ok || s.counters[i] != w {
			t.Errorf("%s = %d (present %v), want %d (present %v)", d.name, s.counters[i], s.has[i], w, ok)
		}
	}
	if s.other["attr_16"] != 10 {
		t.Errorf("other = %v, want attr_16: 10", s.other)
	}
	var e stats
	if err := decodeCPUStats(&e, []netlink.Message{cpu(map[uint16]uint32{1: 4, 2: 5, 3: 6})}, firstExpect); err != nil {
		t.Fatal(err)
	}
	if e.counters[firstExpect] != 4 || e.counters[firstExpect+1] != 5 || e.counters[firstExpect+2] != 6 {
		t.Errorf("expect counters = %v", e.counters[firstExpect:])
	}
}

// TestDNSFilterRequest checks the hand-built request attribute by attribute.
func TestDNSFilterRequest(t *testing.T) {
	t.Parallel()
	b, err := dnsFilterRequest(unix.AF_INET6, unix.IPPROTO_UDP, 53, 7)
	if err != nil {
		t.Fatal(err)
	}
	var m netlink.Message
	if err := m.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if m.Header.Type != 1<<8|1 || m.Header.Flags != netlink.Request|netlink.Dump || m.Header.Sequence != 7 {
		t.Errorf("header = %+v", m.Header)
	}
	if m.Data[0] != unix.AF_INET6 {
		t.Errorf("nfgen_family = %d", m.Data[0])
	}
	var gotFlags uint32
	var nested []uint16
	walkAttrs(m.Data[4:], func(typ uint16, v []byte) {
		if typ == ctaFilter {
			walkAttrs(v, func(typ uint16, v []byte) {
				if typ == ctaFilterOrigFlags {
					gotFlags = binary.NativeEndian.Uint32(v)
				}
			})
		}
	})
	walkAttrs(m.Data[4:], func(typ uint16, _ []byte) { nested = append(nested, typ) })
	if gotFlags != ctaFilterFlagProtoNum|ctaFilterFlagProtoDPort {
		t.Errorf("CTA_FILTER_ORIG_FLAGS = %#x", gotFlags)
	}
	// The kernel parses CTA_FILTER strictly: it must carry NLA_F_NESTED.
	walkRaw(m.Data[4:], func(typ uint16) {
		if typ&nlaTypeMask == ctaFilter && typ&unix.NLA_F_NESTED == 0 {
			t.Error("CTA_FILTER without NLA_F_NESTED")
		}
	})
	proto, port, _ := entryFacts(m.Data[4:])
	if proto != unix.IPPROTO_UDP || port != 53 {
		t.Errorf("CTA_TUPLE_ORIG proto %d port %d, want 17 53", proto, port)
	}
	if len(nested) != 2 {
		t.Errorf("top-level attributes %v, want CTA_TUPLE_ORIG and CTA_FILTER", nested)
	}
}

func walkRaw(b []byte, fn func(typ uint16)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		fn(binary.NativeEndian.Uint16(b[2:4]))
		b = b[min(nlaAlign(l), len(b)):]
	}
}

// TestTally counts entries in a dump read and refuses an unfiltered dump.
func TestTally(t *testing.T) {
	t.Parallel()
	entry := func(proto uint8, port uint16, status uint32) []byte {
		ae := netlink.NewAttributeEncoder()
		ae.Nested(ctaTupleOrig, func(t *netlink.AttributeEncoder) error {
			t.Nested(ctaTupleProto, func(p *netlink.AttributeEncoder) error {
				p.Uint8(ctaProtoNum, proto)
				p.Bytes(ctaProtoDPort, binary.BigEndian.AppendUint16(nil, port))
				return nil
			})
			return nil
		})
		ae.Bytes(ctaStatus, binary.BigEndian.AppendUint32(nil, status))
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return marshal(t, 1<<8 /* IPCTNL_MSG_CT_NEW */, append([]byte{2, 0, 0, 0}, b...))
	}
	done := marshal(t, netlink.Done, []byte{0, 0, 0, 0})
	d := &dnsCounter{port: 53}
	var c dnsCount
	buf := append(append(entry(17, 53, ipsSeenReply|8), entry(17, 53, 8)...), done...)
	fin, err := d.tally(buf, 17, &c)
	if err != nil || !fin {
		t.Fatalf("tally: done %v, err %v", fin, err)
	}
	if c.flows != 2 || c.unreplied != 1 {
		t.Errorf("counted %+v, want 2 flows, 1 unreplied", c)
	}
	if _, err := d.tally(entry(17, 443, 0), 17, &c); err != errFilterIgnored {
		t.Errorf("an entry to port 443: err %v, want errFilterIgnored", err)
	}
}

func marshal(t *testing.T, typ netlink.HeaderType, data []byte) []byte {
	t.Helper()
	b, err := netlink.Message{Header: netlink.Header{Length: uint32(16 + len(data)), Type: typ, Flags: netlink.Multi}, Data: data}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
