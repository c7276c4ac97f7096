package dnscache

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/nodeagent/nodeagent/agent/hostpath"
)

// systemdStub is systemd-resolved's local stub listener. Forwarding to it from
// the cache would loop when resolved itself forwards to the cache, and it
// would hide the real resolvers' failures, so the upstream list that resolved
// keeps in systemdResolvConf is used instead (as node-local-dns and kubelet do).
var systemdStub = netip.MustParseAddr("127.0.0.53")

var systemdResolvConf = []string{"systemd", "resolve", "resolv.conf"} // below /run

// parseResolvConf returns the nameserver addresses of a resolv.conf.
func parseResolvConf(data []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		ip, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		out = append(out, ip.WithZone("").Unmap())
	}
	return out
}

// nodeResolvers reads the node's resolvers from path below the host root,
// replacing the systemd-resolved stub by resolved's own upstream list, and
// drops addresses the cache serves (a loop).
func nodeResolvers(host hostpath.Paths, path string, served []netip.Addr) ([]netip.AddrPort, error) {
	file := host.Path(path)
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	ips := parseResolvConf(data)
	for _, ip := range ips {
		if ip == systemdStub {
			file = host.Run(systemdResolvConf...)
			if data, err = os.ReadFile(file); err != nil {
				return nil, fmt.Errorf("%s names the systemd-resolved stub: %w", host.Path(path), err)
			}
			ips = parseResolvConf(data)
			break
		}
	}
	var out []netip.AddrPort
	for _, ip := range ips {
		if ip == systemdStub || containsAddr(served, ip) {
			continue
		}
		out = append(out, netip.AddrPortFrom(ip, 53))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no usable nameserver (the stub and the cache's own addresses are skipped)", file)
	}
	return out, nil
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}
