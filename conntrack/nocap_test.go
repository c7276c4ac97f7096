package conntrack

import (
	"encoding/json"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netns"
)

// TestRootWithoutNetAdmin runs the feature without CAP_NET_ADMIN (this test
// binary again, under setpriv with it out of the bounding set, inside a
// namespace with a table): the statistics come from /proc instead, the
// reason is counted as permission, and the DNS pass reports it.
func TestRootWithoutNetAdmin(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	ns := newTestNS(t)
	ns.track(t)
	if err := ns.udpFlows(t, 6, "127.0.0.1:53"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.name, "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
		os.Args[0], "-test.run=^TestHelperWithoutNetAdmin$")
	cmd.Env = append(os.Environ(), "CONNTRACK_HELPER=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var got map[string]float64
	if err := json.Unmarshal(out[:len(out)-len("PASS\n")], &got); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	for k, want := range map[string]float64{
		`nodeagent_conntrack_stats_source{source="procfs"}`:                           1,
		`nodeagent_conntrack_read_errors_total{reason="permission",source="netlink"}`: 1,
		`nodeagent_conntrack_dns_count_passes_total{result="permission"}`:             1,
	} {
		if got[k] < want {
			t.Errorf("%s = %v, want >= %v", k, got[k], want)
		}
	}
	if got["nodeagent_conntrack_entries"] < 6 {
		t.Errorf("entries from /proc = %v, want >= 6", got["nodeagent_conntrack_entries"])
	}
}

// TestHelperWithoutNetAdmin is TestRootWithoutNetAdmin's child: it prints the
// samples of two scrapes around a DNS pass as JSON.
func TestHelperWithoutNetAdmin(t *testing.T) {
	if os.Getenv("CONNTRACK_HELPER") == "" {
		return // not a test of its own
	}
	cfg := DefaultConfig()
	cfg.ENA.Enabled = false
	deps, reg := testDeps(t, "/")
	c, err := newIn(cfg, deps, netns.None(), "/proc")
	if err != nil {
		t.Fatal(err)
	}
	defer c.col.nl.close()
	scrape(t, reg)
	c.countDNS()
	b, _ := json.Marshal(scrape(t, reg))
	os.Stdout.Write(append(b, '\n'))
}
