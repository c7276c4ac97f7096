#!/usr/bin/env bash
# bench.sh compares the nodeagent DNS cache with CoreDNS v1.11.3 configured like
# node-local-dns, in one run on this machine, and prints a table of medians and ratios.
#
# Everything runs in a throwaway network namespace: a benchmark upstream
# (hack/benchupstream, every A name answered, TTL 300) on 127.0.0.2, our cache
# on 127.0.0.10 and CoreDNS on 127.0.0.11, both forwarding over TCP. The servers
# are pinned to CPU 1, dnsperf and the upstream to CPU 0. Rounds alternate
# between the two servers (and their order).
#
#   cache hit   QPS: dnsperf over BENCH_HIT_NAMES names already cached
#   cache miss  QPS: every query a new name, forwarded to the upstream
#   latency p50/p99: dnsperf -v at a fixed BENCH_LAT_QPS, cache hits, in 1 s
#     slices alternating between the servers, percentiles over all samples
#   flood: of 1,000 popular names, how many a flood of 100,000 names asked
#     once evicted (upstream queries when they are asked again)
#   RSS: a fresh server after caching 10,000 names
#   restart: 5,000 QPS against 169.254.20.10 on the nodelocaldns interface while
#     ours: a new process starts (SO_REUSEPORT) and the old one gets SIGTERM;
#     node-local-dns-like: CoreDNS stops, the interface is torn down (as
#     node-cache does on exit), re-created and CoreDNS started again at once
#     (its best case: no pod scheduling delay).
#   reload: 5,000 QPS of cache hits while the config changes: ours: the agent
#     itself (bin/nodeagent, no cluster) gets a dnscache key changed in its
#     config file (a hitless reload, agent.Handover); CoreDNS: its Corefile
#     changes under the reload plugin (node-local-dns's Corefile has it).
#     Queries lost, and of the 2,000 names cached before, how many were kept
#     (not asked upstream again).
#   closing upstream: a second upstream closes each TCP connection after 100
#     queries; 20,000 QPS of misses for 10 s: SERVFAILs, connections the
#     upstream accepted and the most open at once (ours: upstream.maxConns 4).
#
#   CPU per answer: each server (ours, CoreDNS, unbound 1.17 with one thread,
#     forward-zone and serve-expired) answers BENCH_CPU_QPS (20,000) QPS of
#     hits over 100 cached names for BENCH_SECONDS; its utime+stime from
#     /proc/PID/stat divided by the answers dnsperf received.
#   pod lookups: hack/podclient looks names up as glibc does from a pod
#     (search <ns>.svc.cluster.local svc.cluster.local cluster.local
#     us-east-1.compute.internal, ndots:5, A+AAAA together) through each
#     server (CoreDNS with node-local-dns's Corefile, unbound with a
#     forward-zone per zone). The upstream is a CoreDNS on 127.0.0.4 standing in
#     for kube-dns (cluster.local from the file plugin: SOA, a kubernetes
#     Service, NXDOMAIN for every other name) and the VPC resolver
#     (us-east-1.compute.internal from a file zone, every other A name from the
#     template plugin, AAAA NODATA with a SOA); it logs every query, and the
#     log's lines are the queries that left the node. One first lookup of
#     s3.us-east-1.amazonaws.com, then 100 different bucket names under it;
#     the client's time per lookup (upstream on loopback: each query that leaves
#     a real node costs a network round trip more).
#
#   BENCH_ONLY="reload closing" runs only those rows (a shorter lock hold);
#   the groups are main (throughput, latency, flood, RSS, restart), cpu, pod,
#   reload, closing.
#
# Needs root, dnsperf, taskset, coredns, unbound (run hack/prereqs.sh first).
#   BENCH_ROUNDS   rounds per measurement (default 3)
#   BENCH_SECONDS  seconds per throughput round (default 8)
#   BENCH_LONG=1   shorthand for BENCH_ROUNDS=7 BENCH_SECONDS=20
#   NODEAGENT_CACHE  where prereqs.sh put coredns (default $HOME/.cache/nodeagent)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "${here}/../.." && pwd)
cache="${NODEAGENT_CACHE:-${HOME}/.cache/nodeagent}"
coredns="${COREDNS:-${cache}/bin/coredns}"
if [[ -n "${BENCH_LONG:-}" ]]; then
	: "${BENCH_ROUNDS:=7}" "${BENCH_SECONDS:=20}"
fi
rounds=${BENCH_ROUNDS:-3}
secs=${BENCH_SECONDS:-8}
hit_names=${BENCH_HIT_NAMES:-1000}
lat_qps=${BENCH_LAT_QPS:-5000}
restart_qps=${BENCH_RESTART_QPS:-5000}
srv_cpu=${BENCH_SERVER_CPU:-1}
gen_cpu=${BENCH_LOAD_CPU:-0}

for b in dnsperf taskset ip nft; do
	command -v "$b" >/dev/null || { echo "bench: $b missing: run dnscache/hack/prereqs.sh" >&2; exit 1; }
done
[[ -x ${coredns} ]] || { echo "bench: ${coredns} missing: run dnscache/hack/prereqs.sh" >&2; exit 1; }
unbound=${UNBOUND:-$(command -v unbound || echo /usr/sbin/unbound)}
[[ -x ${unbound} ]] || { echo "bench: unbound missing: run dnscache/hack/prereqs.sh" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "bench: needs root (network namespace)" >&2; exit 1; }

work=$(mktemp -d)
ns="dnsbench$$"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	ip netns del "${ns}" 2>/dev/null || true
	rm -rf "${work}"
}
trap cleanup EXIT

echo "bench: building" >&2
(cd "${repo}" && go build -o "${work}/dnscached" ./dnscache/cmd/dnscached && go build -o "${work}/upstream" ./dnscache/hack/benchupstream &&
	go build -o "${work}/nodeagent" ./cmd/nodeagent && go build -o "${work}/podclient" ./dnscache/hack/podclient)
only=${BENCH_ONLY:-}
want() { [[ -z ${only} || " ${only} " == *" $1 "* ]]; }

ip netns add "${ns}"
nsx() { ip netns exec "${ns}" "$@"; }
nsx ip link set lo up
kind=dummy
if ! nsx ip link add probe0 type dummy 2>/dev/null; then kind=bridge; else nsx ip link del probe0; fi

upstream=127.0.0.2
ours=127.0.0.10
theirs=127.0.0.11
closer=127.0.0.3
nsenter --net="/run/netns/${ns}" taskset -c "${gen_cpu}" "${work}/upstream" -listen "${upstream}:53" &
pids+=($!)
nsenter --net="/run/netns/${ns}" taskset -c "${gen_cpu}" "${work}/upstream" -listen "${closer}:53" -max-tcp-queries 100 &
pids+=($!)

write_ours_config() { # $1 file $2 address $3 manage interface [$4 upstream]
	local up=${4:-${upstream}}
	cat >"$1" <<YAML
manageInterface: $3
interfaceType: ${kind}
addresses: ["$2"]
firewall: {mode: $([[ $3 == true ]] && echo nftables || echo none)}
clusterDNS: {addresses: ["${up}:53"], service: "", protocol: tcp}
node: {addresses: ["${up}:53"], protocol: tcp}
YAML
}
write_corefile() { # $1 file $2 address [$3 upstream [$4 extra plugin line [$5 success TTL]]]
	cat >"$1" <<COREFILE
.:53 {
    errors
    bind $2
    ${4:-}
    cache {
        success 9984 ${5:-30}
        denial 9984 5
    }
    forward . ${3:-${upstream}}:53 {
        force_tcp
    }
    prometheus 127.0.0.1:0
}
COREFILE
}

start_ours() { # $1 address $2 manage-interface [$3 upstream] -> pid
	local cfg="${work}/ours-$1-$RANDOM.yaml"
	write_ours_config "${cfg}" "$1" "$2" "${3:-}"
	nsenter --net="/run/netns/${ns}" taskset -c "${srv_cpu}" "${work}/dnscached" -config "${cfg}" >>"${work}/ours.log" 2>&1 &
	echo $!
}
start_coredns() { # $1 address [$2 upstream] -> pid
	local cf="${work}/Corefile-$1-$RANDOM"
	write_corefile "${cf}" "$1" "${2:-}"
	nsenter --net="/run/netns/${ns}" taskset -c "${srv_cpu}" "${coredns}" -conf "${cf}" -quiet >>"${work}/coredns.log" 2>&1 &
	echo $!
}
wait_dns() { # $1 address
	for _ in $(seq 100); do
		if nsx dig +time=1 +tries=1 +short "@$1" ready.bench.cluster.local A >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "bench: no answer from $1" >&2
	return 1
}
gone() { # $1 pid: wait for a process that is not our child
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
	kill -KILL "$1" 2>/dev/null || true
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

names() { # $1 prefix $2 count -> file
	local f="${work}/names-$1"
	awk -v p="$1" -v n="$2" 'BEGIN { for (i = 0; i < n; i++) printf "%s%d.bench.cluster.local A\n", p, i }' >"$f"
	echo "$f"
}
perf() { # dnsperf in the namespace on the load CPU: $1 server, rest: args
	local s=$1
	shift
	nsx taskset -c "${gen_cpu}" dnsperf -s "$s" -t 2 "$@" 2>&1
}
qps_of() { awk '/Queries per second/ {print $4}'; }

declare -A res
add() { res[$1]="${res[$1]:-} $2"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

lat_slices=$((rounds * 6))
if want main; then
echo "bench: starting servers (${kind} interface for the restart test)" >&2
pid_ours=$(start_ours "${ours}" false)
pids+=("${pid_ours}")
pid_theirs=$(start_coredns "${theirs}")
pids+=("${pid_theirs}")
wait_dns "${ours}"
wait_dns "${theirs}"

hitfile=$(names hit "${hit_names}")
for s in "${ours}" "${theirs}"; do perf "$s" -d "${hitfile}" -n 1 >/dev/null; done


miss_names=$((secs * 60000))
for r in $(seq "${rounds}"); do
	order=("ours:${ours}" "coredns:${theirs}")
	((r % 2 == 0)) && order=("coredns:${theirs}" "ours:${ours}")
	for kv in "${order[@]}"; do
		who=${kv%%:*}
		s=${kv#*:}
		q=$(perf "$s" -d "${hitfile}" -l "${secs}" -c 8 -q 200 | qps_of)
		add "hit_${who}" "$q"
		mf=$(names "m${r}${who}" "${miss_names}")
		q=$(perf "$s" -d "${mf}" -l "${secs}" -c 8 -q 200 -n 1 | qps_of)
		add "miss_${who}" "$q"
		rm -f "${mf}"
		echo "bench: round ${r} ${who}: hit $(echo "${res[hit_${who}]}" | awk '{print $NF}') miss $(echo "${res[miss_${who}]}" | awk '{print $NF}') qps" >&2
	done
done

# Scan resistance: 1,000 popular names (cached, then asked again), a flood of
# 100,000 names asked once, then the popular names again. How many of those
# went to the upstream (the upstream counts queries by name prefix; the
# flood is over well within their 30 s TTL, so every one is an eviction)?
upstream_count() { nsx dig +short +time=2 @"${upstream}" pop.queries.bench. TXT | tr -d '"'; }
popfile=$(names pop 1000)
floodfile=$(names flood 100000)
for kv in "ours:${ours}" "coredns:${theirs}"; do
	who=${kv%%:*}
	s=${kv#*:}
	perf "$s" -d "${popfile}" -n 2 >/dev/null
	perf "$s" -d "${floodfile}" -n 1 -c 8 -q 200 >/dev/null
	before=$(upstream_count)
	perf "$s" -d "${popfile}" -n 1 >/dev/null
	add "evicted_${who}" "$(($(upstream_count) - before))"
done
echo "bench: popular names lost to a 100,000-name flood: ours ${res[evicted_ours]# } coredns ${res[evicted_coredns]# } of 1000" >&2

# Latency at a fixed rate, cache hits, in short slices alternating between
# the servers: this is a VM, and the host's noise comes in episodes of
# seconds; with 1 s slices it falls on both servers alike instead of on
# whichever had the window. The percentiles are over all samples of a server.
# Each slice re-caches the names first (TTLs run out, and the miss floods
# above evicted some from CoreDNS), so both servers answer every query from
# the cache.
for i in $(seq "${lat_slices}"); do
	order=("ours:${ours}" "coredns:${theirs}")
	((i % 2 == 0)) && order=("coredns:${theirs}" "ours:${ours}")
	for kv in "${order[@]}"; do
		who=${kv%%:*}
		s=${kv#*:}
		perf "$s" -d "${hitfile}" -n 1 >/dev/null
		perf "$s" -d "${hitfile}" -l 1 -c 4 -Q "${lat_qps}" -v | awk '/^> NOERROR/ {print $NF}' >>"${work}/lat_${who}"
	done
done
pct() { # $1 file of seconds, $2 quantile -> microseconds
	sort -g "$1" | awk -v n="$(wc -l <"$1")" -v q="$2" 'NR == int(n*q)+1 {printf "%.0f", $1*1e6}'
}
for who in ours coredns; do
	add "p50_${who}" "$(pct "${work}/lat_${who}" 0.50)"
	add "p99_${who}" "$(pct "${work}/lat_${who}" 0.99)"
	add "p999_${who}" "$(pct "${work}/lat_${who}" 0.999)"
	add "latn_${who}" "$(wc -l <"${work}/lat_${who}")"
done
echo "bench: latency ${lat_slices} slices of 1 s each: p99 ours ${res[p99_ours]# } coredns ${res[p99_coredns]# } us" >&2

# RSS: fresh servers, 10,000 names cached.
gone "${pid_ours}"
gone "${pid_theirs}"
rssfile=$(names rss 10000)
for r in $(seq "${rounds}"); do
	p1=$(start_ours "${ours}" false)
	p2=$(start_coredns "${theirs}")
	pids+=("$p1" "$p2")
	wait_dns "${ours}"
	wait_dns "${theirs}"
	sleep 1
	idle1=$(rss_kb "$p1")
	idle2=$(rss_kb "$p2")
	perf "${ours}" -d "${rssfile}" -n 1 -c 8 -q 200 >/dev/null
	perf "${theirs}" -d "${rssfile}" -n 1 -c 8 -q 200 >/dev/null
	sleep 1
	r1=$(rss_kb "$p1")
	r2=$(rss_kb "$p2")
	add rss_ours "${r1}"
	add rss_coredns "${r2}"
	add rssgrow_ours "$((r1 - idle1))"
	add rssgrow_coredns "$((r2 - idle2))"
	gone "$p1"
	gone "$p2"
done

# Restart under load on 169.254.20.10.
lla=169.254.20.10
restfile=$(names rest 2000)
restart_ours() {
	local old new out
	old=$(start_ours "${lla}" true)
	pids+=("${old}")
	wait_dns "${lla}"
	perf "${lla}" -d "${restfile}" -n 1 >/dev/null
	perf "${lla}" -d "${restfile}" -l 10 -c 8 -Q "${restart_qps}" >"${work}/restart.out" &
	local load=$!
	sleep 3
	new=$(start_ours "${lla}" true)
	pids+=("${new}")
	sleep 1 # the new process is serving
	gone "${old}"
	wait "${load}" || true
	gone "${new}"
	write_ours_config "${work}/teardown.yaml" "${lla}" true
	nsx "${work}/dnscached" -teardown -config "${work}/teardown.yaml" >>"${work}/ours.log" 2>&1
	awk '/Queries lost/ {gsub(/[()%]/, "", $4); print $4}' "${work}/restart.out"
}
restart_nodelocal() {
	local old new
	nsx ip link add nodelocaldns type "${kind}"
	nsx ip addr add "${lla}/32" dev nodelocaldns
	nsx ip link set nodelocaldns up
	old=$(start_coredns "${lla}")
	wait_dns "${lla}"
	perf "${lla}" -d "${restfile}" -n 1 >/dev/null
	perf "${lla}" -d "${restfile}" -l 10 -c 8 -Q "${restart_qps}" >"${work}/restart.out" &
	local load=$!
	sleep 3
	# node-cache on exit: CoreDNS stops, interface and rules are removed.
	gone "${old}"
	nsx ip link del nodelocaldns
	# The new pod: set up the interface, start CoreDNS.
	nsx ip link add nodelocaldns type "${kind}"
	nsx ip addr add "${lla}/32" dev nodelocaldns
	nsx ip link set nodelocaldns up
	new=$(start_coredns "${lla}")
	wait "${load}" || true
	gone "${new}"
	nsx ip link del nodelocaldns
	awk '/Queries lost/ {gsub(/[()%]/, "", $4); print $4}' "${work}/restart.out"
}
for r in $(seq "${rounds}"); do
	add restart_ours "$(restart_ours)"
	add restart_coredns "$(restart_nodelocal)"
	echo "bench: restart round ${r}: lost% ours $(echo "${res[restart_ours]}" | awk '{print $NF}') node-local-dns-like $(echo "${res[restart_coredns]}" | awk '{print $NF}')" >&2
done

fi

# unbound, the C reference: one thread, forwarding, serve-expired.
write_unbound_conf() { # $1 file $2 address, rest: "zone addr@port tcp|udp" forward zones
	local f=$1 a=$2
	shift 2
	cat >"$f" <<CONF
server:
    num-threads: 1
    interface: $a@53
    so-reuseport: yes
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    serve-expired: yes
    module-config: "iterator"
    chroot: ""
    username: ""
    directory: "${work}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
CONF
	local z
	for z in "$@"; do
		read -r name addr proto <<<"$z"
		printf 'forward-zone:\n    name: "%s"\n    forward-addr: %s\n    forward-tcp-upstream: %s\n' \
			"${name}" "${addr}" "$([[ ${proto} == tcp ]] && echo yes || echo no)" >>"$f"
	done
}
start_unbound() { # $1 address, rest: forward zones (see write_unbound_conf) -> pid
	local cf="${work}/unbound-$1-$RANDOM.conf" a=$1
	shift
	write_unbound_conf "${cf}" "${a}" "$@"
	nsenter --net="/run/netns/${ns}" taskset -c "${srv_cpu}" "${unbound}" -d -c "${cf}" >>"${work}/unbound.log" 2>&1 &
	echo $!
}
unb=127.0.0.12
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk_tck=$(getconf CLK_TCK)

# CPU per answer at a fixed rate of cache hits (see the header).
cpu_qps=${BENCH_CPU_QPS:-20000}
if want cpu; then
	p_ours=$(start_ours "${ours}" false)
	p_core=$(start_coredns "${theirs}")
	p_unb=$(start_unbound "${unb}" ". ${upstream}@53 tcp")
	pids+=("${p_ours}" "${p_core}" "${p_unb}")
	for s in "${ours}" "${theirs}" "${unb}"; do wait_dns "$s"; done
	cpufile=$(names cpu 100)
	for r in $(seq "${rounds}"); do
		order=("ours:${ours}:${p_ours}" "coredns:${theirs}:${p_core}" "unbound:${unb}:${p_unb}")
		((r % 3 == 2)) && order=("unbound:${unb}:${p_unb}" "ours:${ours}:${p_ours}" "coredns:${theirs}:${p_core}")
		((r % 3 == 0)) && order=("coredns:${theirs}:${p_core}" "unbound:${unb}:${p_unb}" "ours:${ours}:${p_ours}")
		for kv in "${order[@]}"; do
			IFS=: read -r who s pid <<<"${kv}"
			perf "$s" -d "${cpufile}" -n 1 >/dev/null
			t0=$(ticks "${pid}")
			perf "$s" -d "${cpufile}" -l "${secs}" -c 8 -Q "${cpu_qps}" >"${work}/cpu.out"
			t1=$(ticks "${pid}")
			done_q=$(awk '/Queries completed/ {print $3}' "${work}/cpu.out")
			add "cpu_${who}" "$(awk -v t=$((t1 - t0)) -v hz="${clk_tck}" -v n="${done_q}" 'BEGIN { if (n == 0) print "nan"; else printf "%.2f", t / hz * 1e6 / n }')"
			add "cpuqps_${who}" "$(qps_of <"${work}/cpu.out" | awk '{printf "%.0f", $1}')"
		done
		echo "bench: cpu round ${r}: us per answer ours $(echo "${res[cpu_ours]}" | awk '{print $NF}') coredns $(echo "${res[cpu_coredns]}" | awk '{print $NF}') unbound $(echo "${res[cpu_unbound]}" | awk '{print $NF}'); load $(cut -d' ' -f1 /proc/loadavg)" >&2
	done
	gone "${p_ours}"
	gone "${p_core}"
	gone "${p_unb}"
fi

# Lookups from a pod-like client (see the header).
if want pod; then
	kdns=127.0.0.4
	soa() { echo "$1. 30 IN SOA ns.dns.$1. hostmaster.$1. 1 7200 1800 86400 30"; }
	{ soa cluster.local; echo "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"; } >"${work}/db.cluster.local"
	{ soa us-east-1.compute.internal; echo "ip-10-0-0-1.us-east-1.compute.internal. 60 IN A 10.0.0.1"; } >"${work}/db.compute.internal"
	cat >"${work}/Corefile-kdns" <<COREFILE
cluster.local:53 {
    bind ${kdns}
    file ${work}/db.cluster.local
    log
}
us-east-1.compute.internal:53 {
    bind ${kdns}
    file ${work}/db.compute.internal
    log
}
.:53 {
    bind ${kdns}
    template IN A {
        answer "{{ .Name }} 60 IN A 192.0.2.10"
    }
    template IN AAAA {
        authority "amazonaws.com. 60 IN SOA ns.amazonaws.com. hostmaster.amazonaws.com. 1 7200 900 1209600 60"
    }
    log
}
COREFILE
	nsenter --net="/run/netns/${ns}" taskset -c "${gen_cpu}" "${coredns}" -conf "${work}/Corefile-kdns" >"${work}/kdns.log" 2>&1 &
	pids+=($!)
	# node-local-dns's Corefile (kubernetes cluster/addons/dns/nodelocaldns),
	# its kube-dns-upstream and resolv.conf both the upstream above.
	nodelocal_corefile() { # $1 file $2 address
		local z
		: >"$1"
		for z in cluster.local in-addr.arpa ip6.arpa; do
			cat >>"$1" <<COREFILE
${z}:53 {
    errors
    cache $([[ $z == cluster.local ]] && printf '{\n        success 9984 30\n        denial 9984 5\n    }' || echo 30)
    bind $2
    forward . ${kdns}:53 {
        force_tcp
    }
}
COREFILE
		done
		printf '.:53 {\n    errors\n    cache 30\n    bind %s\n    forward . %s:53\n}\n' "$2" "${kdns}" >>"$1"
	}
	pod_ours() {
		local cfg="${work}/ours-pod.yaml"
		cat >"${cfg}" <<YAML
manageInterface: false
addresses: ["${ours}"]
firewall: {mode: none}
clusterDNS: {addresses: ["${kdns}:53"], service: "", protocol: tcp}
node: {addresses: ["${kdns}:53"], protocol: udp}
YAML
		nsenter --net="/run/netns/${ns}" taskset -c "${srv_cpu}" "${work}/dnscached" -config "${cfg}" >>"${work}/ours.log" 2>&1 &
		echo $!
	}
	pod_coredns() {
		nodelocal_corefile "${work}/Corefile-pod" "${theirs}"
		nsenter --net="/run/netns/${ns}" taskset -c "${srv_cpu}" "${coredns}" -conf "${work}/Corefile-pod" -quiet >>"${work}/coredns.log" 2>&1 &
		echo $!
	}
	pod_unbound() {
		start_unbound "${unb}" "cluster.local ${kdns}@53 tcp" "in-addr.arpa ${kdns}@53 tcp" "ip6.arpa ${kdns}@53 tcp" ". ${kdns}@53 udp"
	}
	left() { # queries the upstream logged so far, once it stopped logging
		local n m
		n=$(grep -c '"' "${work}/kdns.log" || true)
		while sleep 0.2; m=$(grep -c '"' "${work}/kdns.log" || true); [[ $m != "$n" ]]; do n=$m; done
		echo "$n"
	}
	podc() { nsx taskset -c "${gen_cpu}" "${work}/podclient" -server "$1:53" -search "default.svc.cluster.local svc.cluster.local cluster.local us-east-1.compute.internal" "${@:2}"; }
	buckets=$(for i in $(seq 100); do printf 'bucket-%d.s3.us-east-1.amazonaws.com ' "$i"; done)
	for r in $(seq "${rounds}"); do
		for kv in "ours:${ours}" "coredns:${theirs}" "unbound:${unb}"; do
			who=${kv%%:*}
			s=${kv#*:}
			pid=$("pod_${who}")
			pids+=("${pid}")
			until nsx dig +time=1 +tries=1 +short "@$s" kubernetes.default.svc.cluster.local A 2>/dev/null | grep -q 10.96.0.1; do sleep 0.1; done
			n0=$(left)
			read -r _ us _ _ < <(podc "$s" s3.us-east-1.amazonaws.com)
			n1=$(left)
			podc "$s" ${buckets} >"${work}/pod.out"
			n2=$(left)
			add "pod_first_q_${who}" "$((n1 - n0))"
			add "pod_first_us_${who}" "${us}"
			add "pod_next_q_${who}" "$((n2 - n1))"
			add "pod_next_us_${who}" "$(awk '{print $2}' "${work}/pod.out" | median)"
			gone "${pid}"
		done
		echo "bench: pod round ${r}: queries that left the node, first lookup and next 100: ours $(echo "${res[pod_first_q_ours]}" | awk '{print $NF}') $(echo "${res[pod_next_q_ours]}" | awk '{print $NF}') coredns $(echo "${res[pod_first_q_coredns]}" | awk '{print $NF}') $(echo "${res[pod_next_q_coredns]}" | awk '{print $NF}') unbound $(echo "${res[pod_first_q_unbound]}" | awk '{print $NF}') $(echo "${res[pod_next_q_unbound]}" | awk '{print $NF}')" >&2
	done
fi

# Reload under load (see the header).
reload_qps=${BENCH_RELOAD_QPS:-5000}
reloadfile=$(names rl 2000)
agent_config() { # $1 file $2 upstream timeout
	cat >"$1" <<YAML
agent:
  reloadInterval: 1s
  readiness: {gatingFeatures: [dnscache]}
dnscache:
  enabled: true
  manageInterface: false
  addresses: ["${ours}"]
  firewall: {mode: none}
  clusterDNS: {addresses: ["${upstream}:53"], service: "", protocol: tcp}
  node: {addresses: ["${upstream}:53"], protocol: tcp}
  upstream: {timeout: $2}
YAML
}
reload_round() { # $1 ours|coredns -> "lost% kept"
	local pid f before out=${work}/reload.out log=${work}/reload-$1.log
	: >"${log}"
	if [[ $1 == ours ]]; then
		f=${work}/agent.yaml
		agent_config "$f" 2s
		nsenter --net="/run/netns/${ns}" taskset -c "${srv_cpu}" "${work}/nodeagent" -config "$f" -metrics-addr "" -log-format text >>"${log}" 2>&1 &
		pid=$!
		s=${ours}
	else
		f=${work}/Corefile-reload
		write_corefile "$f" "${theirs}" "" "reload 2s 1s" 30
		nsenter --net="/run/netns/${ns}" taskset -c "${srv_cpu}" "${coredns}" -conf "$f" >>"${log}" 2>&1 &
		pid=$!
		s=${theirs}
	fi
	pids+=("${pid}")
	wait_dns "$s"
	perf "$s" -d "${reloadfile}" -n 1 >/dev/null
	before=$(nsx dig +short +time=2 @"${upstream}" rl.queries.bench. TXT | tr -d '"')
	perf "$s" -d "${reloadfile}" -l 10 -c 8 -Q "${reload_qps}" >"${out}" &
	local load=$!
	sleep 3
	if [[ $1 == ours ]]; then agent_config "$f" 3s; else write_corefile "$f" "${theirs}" "" "reload 2s 1s" 31; fi
	wait "${load}" || true
	local asked=$(($(nsx dig +short +time=2 @"${upstream}" rl.queries.bench. TXT | tr -d '"') - before))
	local reloaded=yes
	if [[ $1 == ours ]]; then grep -q 'feature starting beside' "${log}" || reloaded=no; else grep -q 'Reloading complete' "${log}" || reloaded=no; fi
	gone "${pid}"
	echo "$(awk '/Queries lost/ {gsub(/[()%]/, "", $4); print $4}' "${out}") $((asked > 2000 ? 0 : 2000 - asked)) ${reloaded}"
}
if want reload; then
	for r in $(seq "${rounds}"); do
		for who in ours coredns; do
			read -r lost kept reloaded < <(reload_round "${who}")
			[[ ${reloaded} == yes ]] || echo "bench: reload round ${r} ${who}: the config change was not applied (see the log)" >&2
			add "reload_lost_${who}" "${lost}"
			add "reload_kept_${who}" "${kept}"
		done
		echo "bench: reload round ${r}: lost% ours $(echo "${res[reload_lost_ours]}" | awk '{print $NF}') coredns $(echo "${res[reload_lost_coredns]}" | awk '{print $NF}'); kept ours $(echo "${res[reload_kept_ours]}" | awk '{print $NF}') coredns $(echo "${res[reload_kept_coredns]}" | awk '{print $NF}') of 2000" >&2
	done
fi

# An upstream closing each TCP connection after 100 queries (see the header).
close_qps=${BENCH_CLOSE_QPS:-20000}
if want closing; then
	for r in $(seq "${rounds}"); do
		for who in ours coredns; do
			if [[ ${who} == ours ]]; then pid=$(start_ours "${ours}" false "${closer}"); s=${ours}; else pid=$(start_coredns "${theirs}" "${closer}"); s=${theirs}; fi
			pids+=("${pid}")
			wait_dns "$s"
			read -r opened0 _ < <(nsx dig +short +time=2 @"${closer}" tcp.conns.bench. TXT | tr -d '"')
			cf=$(names "cl${who}" $((close_qps * 10 + 10000)))
			perf "$s" -d "${cf}" -l 10 -c 8 -q 1000 -Q "${close_qps}" -n 1 >"${work}/close.out"
			read -r opened peak < <(nsx dig +short +time=2 @"${closer}" tcp.conns.bench. TXT | tr -d '"')
			rm -f "${cf}"
			gone "${pid}"
			add "close_servfail_${who}" "$(awk '/Response codes/ { for (i = 1; i <= NF; i++) if ($i == "SERVFAIL") n = $(i+1) } END { print n + 0 }' "${work}/close.out")"
			add "close_lost_${who}" "$(awk '/Queries lost/ {gsub(/[()%]/, "", $4); print $4}' "${work}/close.out")"
			add "close_qps_${who}" "$(qps_of <"${work}/close.out")"
			add "close_opened_${who}" "$((opened - opened0))"
			add "close_peak_${who}" "${peak}"
		done
		echo "bench: closing upstream round ${r}: SERVFAIL ours $(echo "${res[close_servfail_ours]}" | awk '{print $NF}') coredns $(echo "${res[close_servfail_coredns]}" | awk '{print $NF}'); most connections open ours $(echo "${res[close_peak_ours]}" | awk '{print $NF}') coredns $(echo "${res[close_peak_coredns]}" | awk '{print $NF}')" >&2
	done
fi

m() { echo "${res[$1]:-}" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.3fx", a / b }'; }
if want main || want reload || want closing; then
echo
echo "dnscache vs CoreDNS v1.11.3 (node-local-dns config): medians of ${rounds} alternating rounds, ${secs}s each;"
echo "latency over all samples of ${lat_slices} alternating 1 s slices ($(m latn_ours) and $(m latn_coredns) answers)"
echo "server pinned to CPU ${srv_cpu}, dnsperf + upstream to CPU ${gen_cpu}; $(nproc) CPUs, load average $(cut -d' ' -f1 /proc/loadavg)"
printf '%-34s %14s %14s %10s %s\n' "measure" "nodeagent" "coredns" "ratio" "target"
row() { printf '%-34s %14s %14s %10s %s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")" "$4"; }
row "cache-hit QPS" "$(m hit_ours)" "$(m hit_coredns)" ">= 1.5x"
row "cache-miss QPS" "$(m miss_ours)" "$(m miss_coredns)" ">= 1.0x"
row "p50 latency us (${lat_qps} QPS, hits)" "$(m p50_ours)" "$(m p50_coredns)" ""
row "p99 latency us (${lat_qps} QPS, hits)" "$(m p99_ours)" "$(m p99_coredns)" "<= 1.0x"
row "p99.9 latency us" "$(m p999_ours)" "$(m p999_coredns)" ""
printf '%-34s %14s %14s\n' "popular names lost to a flood" "$(m evicted_ours)" "$(m evicted_coredns)"
row "RSS KiB, 10,000 names cached" "$(m rss_ours)" "$(m rss_coredns)" "<= 0.5x"
row "  of which growth from idle, KiB" "$(m rssgrow_ours)" "$(m rssgrow_coredns)" ""
printf '%-34s %14s %14s %10s %s\n' "restart at ${restart_qps} QPS: lost %" "$(m restart_ours)" "$(m restart_coredns)" "" "<= 0.01%"
echo "(restart coredns column: node-local-dns-like teardown of the interface on exit, best case)"
printf '%-34s %14s %14s %10s %s\n' "reload at ${reload_qps} QPS: lost %" "$(m reload_lost_ours)" "$(m reload_lost_coredns)" "" "0"
printf '%-34s %14s %14s %10s %s\n' "  cached names kept, of 2000" "$(m reload_kept_ours)" "$(m reload_kept_coredns)" "" "2000"
printf '%-34s %14s %14s %10s %s\n' "closing upstream: SERVFAIL" "$(m close_servfail_ours)" "$(m close_servfail_coredns)" "" "0"
printf '%-34s %14s %14s %10s %s\n' "  lost % (${close_qps} QPS misses)" "$(m close_lost_ours)" "$(m close_lost_coredns)" "" ""
printf '%-34s %14s %14s %10s %s\n' "  answered QPS" "$(m close_qps_ours)" "$(m close_qps_coredns)" "" ""
printf '%-34s %14s %14s %10s %s\n' "  TCP connections opened" "$(m close_opened_ours)" "$(m close_opened_coredns)" "" ""
printf '%-34s %14s %14s %10s %s\n' "  most open at once" "$(m close_peak_ours)" "$(m close_peak_coredns)" "" "<= 4 (maxConns)"
fi
if want cpu || want pod; then
	echo
	echo "beside unbound $("${unbound}" -V | awk 'NR == 1 {print $2}') (one thread, forward-zone, serve-expired), medians of ${rounds} rounds"
	printf '%-34s %14s %14s %14s %10s %s\n' "measure" "nodeagent" "coredns" "unbound" "ours/unb" "target"
	row3() { printf '%-34s %14s %14s %14s %10s %s\n' "$1" "$(m "$2_ours")" "$(m "$2_coredns")" "$(m "$2_unbound")" "$(ratio "$(m "$2_ours")" "$(m "$2_unbound")")" "$3"; }
	if want cpu; then
		row3 "CPU us per answer (${cpu_qps} QPS hits)" cpu "<= 1.0x"
		row3 "  answered QPS" cpuqps ""
	fi
	if want pod; then
		row3 "pod lookup: queries leaving node" pod_first_q "<= 4 (node domain + name)"
		row3 "  first lookup, client us" pod_first_us ""
		row3 "  next 100 names: leaving node" pod_next_q "<= 400"
		row3 "  next 100: median client us" pod_next_us ""
	fi
fi
echo "all rounds: $(for k in "${!res[@]}"; do printf '%s=[%s] ' "$k" "${res[$k]# }"; done)"
