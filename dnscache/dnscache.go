package dnscache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/kube"
	"github.com/nodeagent/nodeagent/agent/netnsrun"
)

// Name is the feature's name: config section, log attribute, metric subsystem.
const Name = "dnscache"

var (
	errNotReady = errors.New("dnscache: not serving yet")
	errStopped  = errors.New("dnscache: stopped")
)

// Cache is the node-local DNS cache feature.
type Cache struct {
	cfg   *Config
	deps  agent.Deps
	log   *slog.Logger
	m     *metrics
	st    *store
	nx    *nxState // what the local NXDOMAIN rules learned; handed over with st
	r     *router
	addrs []netip.Addr

	// ns is the network namespace to work in; tests set it, the agent
	// works in its own (the host's) namespace.
	ns netns.NsHandle

	// svc watches clusterDNS.service while Run runs (nil: the cluster DNS
	// comes from clusterDNS.addresses, or there is no cluster).
	svc *kube.Watch[*corev1.Service]

	mu      sync.Mutex
	serving error // nil while serving on every address
	upErr   error // the last upstream lookup's failure
}

var (
	_ agent.Feature          = (*Cache)(nil)
	_ agent.ReadyChecker     = (*Cache)(nil)
	_ agent.DegradedReporter = (*Cache)(nil)
)

// New validates cfg and allocates the cache; it starts nothing.
func New(cfg *Config, deps agent.Deps) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	zones := []string{cfg.ClusterDNS.Domain, "."}
	zones = append(zones, cfg.ClusterDNS.ReverseZones...)
	for _, z := range cfg.Zones {
		zones = append(zones, z.Name)
	}
	c := &Cache{
		cfg: cfg, deps: deps, log: log, st: newStore(cfg.Cache.MaxEntries, cfg.Cache.MaxBytes), nx: newNXState(), r: newRouter(zones),
		addrs: cfg.servedAddrs(), ns: netns.None(), serving: errNotReady,
	}
	// The store may be replaced by the one of the instance this one takes
	// over from (see takeOver) before Run.
	m, err := newMetrics(deps.Metrics, func() *store { return c.st })
	if err != nil {
		return nil, fmt.Errorf("dnscache: register metrics: %w", err)
	}
	c.m = m
	return c, nil
}

// Name implements agent.Feature.
func (c *Cache) Name() string { return Name }

// Ready returns nil while the cache is serving on every address and every
// zone has upstreams; otherwise it says what is missing.
func (c *Cache) Ready() error {
	if err := c.servingErr(); err != nil {
		return err
	}
	return c.missingUpstreams()
}

func (c *Cache) servingErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.serving
}

func (c *Cache) setServing(err error) {
	c.mu.Lock()
	c.serving = err
	c.mu.Unlock()
}

// Degraded names the zones whose upstreams are all down (agent.DegradedReporter):
// /readyz shows them, without making the node not ready once it started
// (their names SERVFAIL or are served stale until an upstream is back).
func (c *Cache) Degraded() []string {
	var out []string
	for _, z := range c.r.zones {
		if down, names := z.down(); down {
			out = append(out, fmt.Sprintf("zone %s: every upstream down (%s)", z.name, strings.Join(names, ", ")))
		}
	}
	return out
}

// missingUpstreams names the first zone without upstreams, and why.
func (c *Cache) missingUpstreams() error {
	for _, z := range c.r.zones {
		if len(z.upstreams()) == 0 {
			c.mu.Lock()
			why := c.upErr
			c.mu.Unlock()
			if why == nil {
				why = errNoUpstream
			}
			return fmt.Errorf("dnscache: zone %s has no upstream: %w", z.name, why)
		}
	}
	return nil
}

// Run ensures the interface and rules, serves until ctx is done, then stops
// serving gracefully, leaving the interface and rules in place for the next
// process. It returns after every goroutine it started has exited.
func (c *Cache) Run(ctx context.Context) error {
	c.setServing(errNotReady)
	defer c.setServing(errStopped)
	defer c.watchService(ctx)()

	if err := c.ensure(ctx); err != nil {
		var se *setupError
		if errors.As(err, &se) && (se.reason == reasonInterface || se.reason == reasonAddress) {
			return err // nothing to bind to
		}
		// Without the rules DNS still works, through conntrack: serve,
		// and retry on the next reconcile.
	}
	if err := c.updateUpstreams(ctx); err != nil {
		if c.missingUpstreams() != nil && c.othersServing() {
			if !c.waitUpstreams(ctx) {
				return nil
			}
		} else {
			// Serve anyway: the zones with upstreams answer, the others
			// SERVFAIL until a reconcile resolves their upstreams.
			c.log.Warn("upstream lookup failed; serving the zones that have upstreams", "err", err)
		}
	}
	ls, err := listen(c.ns, c.addrs, c.cfg.Port)
	if err != nil {
		c.m.setupErrors.WithLabelValues(reasonListen).Inc()
		return fmt.Errorf("dnscache: %w", err)
	}

	s := newServer(c.cfg, c.st, c.r, c.m, c.log)
	s.lnx = newLocalNX(c.cfg, c.r, c.nx)
	bgCtx, cancelBg := context.WithCancel(context.Background())
	defer cancelBg()
	s.bgCtx = bgCtx

	var workers sync.WaitGroup
	s.missWorkers(min(c.cfg.Upstream.MaxConcurrent, missWorkers), &workers)
	stopPrefetch := make(chan struct{})
	s.prefetchers(stopPrefetch, &workers)
	s.bg.Go(s.askSchemaSOAs)
	stop := make(chan struct{})
	var servers sync.WaitGroup
	readers := runtime.GOMAXPROCS(0)
	for _, uc := range ls.udp {
		servers.Go(func() { s.serveUDP(uc, readers, stop) })
	}
	var tcpServers []*tcpServer
	for _, l := range ls.tcp {
		srv := newTCPServer(s, l)
		tcpServers = append(tcpServers, srv)
		servers.Go(srv.serve)
	}

	loopCtx, cancelLoops := context.WithCancel(ctx)
	var loops sync.WaitGroup
	loops.Go(func() { c.reconcileLoop(loopCtx) })
	loops.Go(func() { c.healthLoop(loopCtx) })

	c.setServing(nil)
	c.log.Info("serving", "addresses", c.cfg.Addresses, "port", c.cfg.Port)
	<-ctx.Done()
	c.setServing(errStopped)

	// Stop in order: UDP readers detach and drain, TCP stops accepting and
	// finishes its connections, answers in flight complete (within
	// shutdownGrace), then the sockets close.
	close(stop)
	graceCtx, cancelGrace := context.WithTimeout(context.Background(), c.cfg.ShutdownGrace)
	defer cancelGrace()
	for _, srv := range tcpServers {
		srv.shutdown(graceCtx)
	}
	servers.Wait()
	close(s.misses)
	close(stopPrefetch)
	done := make(chan struct{})
	go func() { workers.Wait(); s.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-graceCtx.Done():
		cancelBg()
		<-done
	}
	s.dropPrefetches()
	ls.close()
	cancelLoops()
	loops.Wait()
	for _, u := range c.r.all() {
		u.closeConns()
	}
	c.log.Info("stopped serving; interface and rules left in place")
	return nil
}

// joinRetry is how often a process waiting to join retries its upstreams.
const joinRetry = time.Second

// waitUpstreams holds back a process that would join another one already
// serving (a rolling update) while some zone has no upstreams: taking a
// share of the queries then would SERVFAIL that zone's names, which the old
// process still answers. It returns true once every zone has upstreams or
// nobody else answers any more (serve what there is), false when ctx ends.
func (c *Cache) waitUpstreams(ctx context.Context) bool {
	c.log.Warn("another process is serving and a zone has no upstream; waiting before joining it", "err", c.missingUpstreams())
	t := time.NewTicker(joinRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		if c.updateUpstreams(ctx) == nil || c.missingUpstreams() == nil {
			c.log.Info("upstreams found; joining")
			return true
		}
		if !c.othersServing() {
			c.log.Warn("the other process stopped answering; serving the zones that have upstreams", "err", c.missingUpstreams())
			return true
		}
	}
}

// othersServing reports whether something already answers DNS on the first
// served address: the process this one replaces. It asks for type ANY,
// which the cache answers itself (RFC 8482), so a slow upstream does not
// hide a live process; a process slow on a loaded node gets othersProbes
// tries, while a refused query (nothing bound) ends the probe at once.
func (c *Cache) othersServing() bool {
	ap := netip.AddrPortFrom(c.addrs[0], uint16(c.cfg.Port)).String()
	var conn net.Conn
	if netnsrun.Run(c.ns, func() (err error) { conn, err = net.Dial("udp", ap); return err }) != nil {
		return false
	}
	defer conn.Close()
	dc := &dns.Conn{Conn: conn}
	for range othersProbes {
		m := new(dns.Msg)
		m.SetQuestion(".", dns.TypeANY)
		conn.SetDeadline(time.Now().Add(othersProbeWait))
		if err := dc.WriteMsg(m); err != nil {
			return false
		}
		for {
			r, err := dc.ReadMsg()
			if err == nil && r.Id == m.Id {
				return true
			}
			if err == nil {
				continue // a late answer to an earlier try
			}
			if errors.Is(err, unix.ECONNREFUSED) {
				return false
			}
			break
		}
	}
	return false
}

// othersProbes and othersProbeWait bound othersServing.
const (
	othersProbes    = 3
	othersProbeWait = time.Second
)

// ensure makes the interface, addresses and firewall rules exist.
func (c *Cache) ensure(ctx context.Context) error {
	c.m.reconciles.Inc()
	var errs []error
	if c.cfg.ManageInterface {
		h, err := netlinkHandle(c.ns)
		if err != nil {
			err = &setupError{reasonInterface, err}
		} else {
			var changed bool
			changed, err = ensureInterface(h, c.cfg.InterfaceName, c.cfg.InterfaceType, c.addrs)
			h.Close()
			if changed && err == nil {
				c.log.Info("interface ensured", "interface", c.cfg.InterfaceName, "addresses", c.cfg.Addresses)
			}
		}
		if err != nil {
			var se *setupError
			if errors.As(err, &se) {
				c.m.setupErrors.WithLabelValues(se.reason).Inc()
			}
			c.log.Error("interface setup failed", "interface", c.cfg.InterfaceName, "err", err)
			return err
		}
	}
	if err := c.ensureFirewall(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Cache) ensureFirewall(ctx context.Context) error {
	rules := firewallRules(c.addrs, c.cfg.Port)
	var changed bool
	var err error
	reason := reasonNftables
	switch c.cfg.Firewall.Mode {
	case FirewallNone:
		return nil
	case FirewallNftables:
		nsfd := -1
		if c.ns.IsOpen() {
			nsfd = int(c.ns)
		}
		changed, err = (&nftFirewall{table: c.cfg.Firewall.Table, netns: nsfd}).ensure(ctx, rules)
	case FirewallIptables:
		reason = reasonIptables
		changed, err = (&iptFirewall{comment: c.cfg.Firewall.Table, exec: c.deps.Exec}).ensure(ctx, rules)
	}
	if err != nil && ctx.Err() != nil {
		return nil // stopping: not a failure
	}
	if err != nil {
		c.m.setupErrors.WithLabelValues(reason).Inc()
		c.log.Error("firewall setup failed", "mode", c.cfg.Firewall.Mode, "err", err)
		return &setupError{reason, err}
	}
	if changed {
		c.log.Info("firewall rules ensured", "mode", c.cfg.Firewall.Mode, "rules", len(rules))
	}
	return nil
}

// reconcileLoop re-ensures everything periodically and on link and address
// changes, refreshes the upstream lists and drops dead cache entries.
func (c *Cache) reconcileLoop(ctx context.Context) {
	changes := make(chan struct{}, 1)
	var watch sync.WaitGroup
	if c.cfg.ManageInterface {
		watch.Go(func() { c.watchLinks(ctx, changes) })
	}
	defer watch.Wait()
	svcChanged, unsubscribe := c.serviceChanges()
	defer unsubscribe()
	t := time.NewTicker(c.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.st.sweep(time.Now().UnixNano())
			if err := c.updateUpstreams(ctx); err != nil {
				c.log.Warn("upstream refresh failed; keeping the previous list", "err", err)
			}
		case <-svcChanged:
			if err := c.updateUpstreams(ctx); err != nil {
				c.log.Warn("cluster DNS Service changed; upstream refresh failed, keeping the previous list", "err", err)
			}
			continue
		case <-changes:
		}
		c.ensure(ctx) // errors are counted and logged
	}
}

// watchLinks signals changes whenever our interface or its addresses change.
// The netlink subscriptions use a receive timeout so that they end (and are
// renewed) every second: a blocked netlink read cannot be interrupted, and no
// goroutine may outlive Run. Changes missed in between are caught by the
// periodic reconcile.
func (c *Cache) watchLinks(ctx context.Context, changes chan<- struct{}) {
	var ns *netns.NsHandle
	if c.ns.IsOpen() {
		ns = &c.ns
	}
	onErr := func(err error) {
		if !strings.Contains(err.Error(), "temporarily unavailable") {
			c.m.setupErrors.WithLabelValues(reasonLinkWatch).Inc()
		}
	}
	for ctx.Err() == nil {
		tv := unix.NsecToTimeval(int64(time.Second))
		done := make(chan struct{})
		links := make(chan netlink.LinkUpdate, 16)
		addrs := make(chan netlink.AddrUpdate, 16)
		errLink := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: ns, ErrorCallback: onErr, ReceiveTimeout: &tv})
		var errAddr error
		if errLink == nil {
			errAddr = netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: ns, ErrorCallback: onErr, ReceiveTimeout: &tv})
		}
		if errLink == nil && errAddr == nil {
			c.forwardChanges(ctx, links, addrs, changes)
		}
		close(done)
		if errLink == nil {
			for range links { // closed by the subscription within the receive timeout
			}
		}
		if errAddr == nil && errLink == nil {
			for range addrs {
			}
		}
		if err := errors.Join(errLink, errAddr); err != nil {
			c.m.setupErrors.WithLabelValues(reasonLinkWatch).Inc()
			c.log.Warn("link watch failed; relying on the periodic reconcile", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// forwardChanges returns when ctx ends or a subscription closes.
func (c *Cache) forwardChanges(ctx context.Context, links <-chan netlink.LinkUpdate, addrs <-chan netlink.AddrUpdate, changes chan<- struct{}) {
	for {
		var ours bool
		select {
		case <-ctx.Done():
			return
		case u, ok := <-links:
			if !ok {
				return
			}
			ours = u.Attrs() != nil && u.Attrs().Name == c.cfg.InterfaceName
		case u, ok := <-addrs:
			if !ok {
				return
			}
			if !u.NewAddr {
				ip, _ := netip.AddrFromSlice(u.LinkAddress.IP)
				ours = containsAddr(c.addrs, ip.Unmap())
			}
		}
		if ours {
			select {
			case changes <- struct{}{}:
			default:
			}
		}
	}
}

// healthLoop probes the upstreams marked down.
func (c *Cache) healthLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.Upstream.HealthCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, u := range c.r.all() {
			if u.down.Load() && ctx.Err() == nil {
				u.probe(ctx)
			}
		}
	}
}

// updateUpstreams (re)reads the upstream lists: cluster DNS from config or
// its Service, node resolvers from config or resolv.conf, extra zones. A list
// that cannot be read keeps its previous value (none at the first call); the
// others are still updated. Failures are counted and returned.
func (c *Cache) updateUpstreams(ctx context.Context) error {
	var errs []error
	if cluster, err := c.clusterUpstreams(); err != nil {
		c.m.setupErrors.WithLabelValues(reasonService).Inc()
		errs = append(errs, fmt.Errorf("dnscache: cluster DNS: %w", err))
	} else {
		c.setUpstreams(c.cfg.ClusterDNS.Domain, cluster, c.cfg.ClusterDNS.Protocol)
		for _, z := range c.cfg.ClusterDNS.ReverseZones {
			c.setUpstreams(z, cluster, c.cfg.ClusterDNS.Protocol)
		}
	}
	if len(c.cfg.Node.Addresses) > 0 {
		c.setUpstreams(".", mustUpstreams(c.cfg.Node.Addresses), c.cfg.Node.Protocol)
	} else if node, err := nodeResolvers(c.deps.Host, c.cfg.Node.ResolvConf, c.addrs); err != nil {
		c.m.setupErrors.WithLabelValues(reasonResolv).Inc()
		errs = append(errs, fmt.Errorf("dnscache: node resolvers: %w", err))
	} else {
		c.setUpstreams(".", node, c.cfg.Node.Protocol)
	}
	for _, z := range c.cfg.Zones {
		c.setUpstreams(z.Name, mustUpstreams(z.Addresses), z.Protocol)
	}
	err := errors.Join(errs...)
	c.mu.Lock()
	c.upErr = err
	c.mu.Unlock()
	return err
}

func mustUpstreams(list []string) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(list))
	for _, s := range list {
		if ap, err := parseUpstream(s); err == nil {
			out = append(out, ap)
		}
	}
	return out
}

// setUpstreams replaces a zone's upstreams, keeping the ones (and their
// connections and health) whose address did not change.
func (c *Cache) setUpstreams(zoneName string, addrs []netip.AddrPort, proto string) {
	z := c.r.zone(zoneName)
	if z == nil {
		return
	}
	old := z.upstreams()
	next := make([]*upstream, 0, len(addrs))
	for _, a := range addrs {
		i := slices.IndexFunc(old, func(u *upstream) bool { return u.addr == a && u.proto == proto })
		if i >= 0 {
			next = append(next, old[i])
			continue
		}
		// Zones that share an address (cluster domain and reverse zones) share the upstream.
		var shared *upstream
		for _, u := range c.r.all() {
			if u.addr == a && u.proto == proto {
				shared = u
			}
		}
		if shared == nil {
			shared = newUpstream(a, proto, c.cfg.Upstream, c.m, c.log)
		}
		next = append(next, shared)
	}
	if slices.Equal(old, next) {
		return
	}
	z.ups.Store(&next)
	names := make([]string, len(next))
	for i, u := range next {
		names[i] = u.name
	}
	c.log.Info("upstreams set", "zone", z.name, "upstreams", names, "protocol", proto)
	for _, u := range old {
		if !slices.Contains(c.r.all(), u) {
			u.close()
			c.m.upstreamHealthy.DeleteLabelValues(u.name)
		}
	}
}

// Teardown removes the interface and the firewall rules. The agent calls it
// when the feature is disabled (enabled: false); stopping or restarting Run
// never does. It is idempotent.
func Teardown(ctx context.Context, cfg *Config, deps agent.Deps) error {
	return teardown(ctx, cfg, deps, netns.None())
}

func teardown(ctx context.Context, cfg *Config, deps agent.Deps, ns netns.NsHandle) error {
	var errs []error
	addrs := cfg.servedAddrs()
	nsfd := -1
	if ns.IsOpen() {
		nsfd = int(ns)
	}
	if cfg.Firewall.Table != "" {
		if err := (&nftFirewall{table: cfg.Firewall.Table, netns: nsfd}).remove(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Firewall.Mode == FirewallIptables && deps.Exec != nil {
		if err := (&iptFirewall{comment: cfg.Firewall.Table, exec: deps.Exec}).remove(ctx, firewallRules(addrs, cfg.Port)); err != nil {
			errs = append(errs, err)
		}
	}
	foreign := false
	if cfg.ManageInterface {
		h, err := netlinkHandle(ns)
		if err == nil {
			foreign, err = removeInterface(h, cfg.InterfaceName, cfg.InterfaceType)
			h.Close()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove interface %s: %w", cfg.InterfaceName, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dnscache teardown: %w", err)
	}
	if deps.Log != nil {
		if foreign {
			deps.Log.Info("removed the rules; interface left in place: the agent did not create it (e.g. node-local-dns's)", "interface", cfg.InterfaceName)
		} else {
			deps.Log.Info("removed interface and rules", "interface", cfg.InterfaceName)
		}
	}
	return nil
}
