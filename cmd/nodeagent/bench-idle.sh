#!/usr/bin/env bash
# Idle cost of the agent with every feature disabled: RSS and CPU over a
# window, with /metrics scraped every 5s as Prometheus would (a little more
# often than usual). Target: RSS <= 25 MB.
#   bench-idle.sh [BINARY]        BENCH_SECONDS (default 30)
set -euo pipefail
bin=${1:-bin/nodeagent}
secs=${BENCH_SECONDS:-30}
[[ -x $bin ]] || { echo "no agent binary at $bin (make build)" >&2; exit 1; }

dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/config.yaml" <<'YAML'
raid: {enabled: false}
dnscache: {enabled: false}
imagewarm: {enabled: false}
interrupt: {enabled: false}
conntrack: {enabled: false}
YAML
port=$((20000 + RANDOM % 20000))
"$bin" --config "$dir/config.yaml" --metrics-addr "127.0.0.1:$port" --log-level warn >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu)
t0=$(date +%s.%N)
max_rss=0
sum_rss=0
n=0
for ((i = 0; i < secs; i++)); do
	((i % 5 == 0)) && curl -sf "http://127.0.0.1:$port/metrics" >/dev/null
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
	((rss > max_rss)) && max_rss=$rss
	sum_rss=$((sum_rss + rss))
	n=$((n + 1))
	sleep 1
done
c1=$(cpu)
t1=$(date +%s.%N)
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")

awk -v c="$((c1 - c0))" -v hz="$ticks" -v t0="$t0" -v t1="$t1" -v avg="$((sum_rss / n))" -v max="$max_rss" -v hwm="$hwm" -v secs="$secs" 'BEGIN {
	cpu = c / hz / (t1 - t0) * 100
	printf "idle agent, every feature disabled, %ds, /metrics scraped every 5s\n", secs
	printf "%-22s %10s\n", "metric", "value"
	printf "%-22s %8.1f MB\n", "RSS average", avg / 1024
	printf "%-22s %8.1f MB\n", "RSS max", max / 1024
	printf "%-22s %8.1f MB\n", "RSS high-water mark", hwm / 1024
	printf "%-22s %9.2f %%\n", "CPU (of one core)", cpu
	printf "target RSS <= 25 MB: %s\n", (hwm / 1024 <= 25 ? "met" : "MISSED")
}'
