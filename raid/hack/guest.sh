# guest.sh: helpers for the scenario scripts the raid QEMU tests run inside
# the guest (sourced by /scenario.sh). Every fact the test checks is a line
# "GUEST <scenario> <key> <value>" on the serial console.

# dev_by_serial SERIAL: the kernel name of the NVMe disk with that serial.
dev_by_serial() {
	for d in /sys/block/nvme*; do
		[ "$(tr -d ' ' <"$d/device/serial")" = "$1" ] && { basename "$d"; return 0; }
	done
	return 1
}

# fact SCENARIO KEY VALUE...
fact() { s=$1 k=$2; shift 2; echo "GUEST $s $k $*"; }

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# agent SCENARIO PORT: runs the agent (the real daemon, raid feature only)
# with /cfg/SCENARIO.yaml until it logs its first raid decision, then reports
# what it did, its metrics and `nodeagent raid status`, and stops it.
agent() {
	s=$1 port=$2 log=/tmp/$1.log
	t0=$(uptime_s)
	nodeagent --config "/cfg/$s.yaml" --metrics-addr "127.0.0.1:$port" --log-format json --host-root / >"$log" 2>&1 &
	pid=$!
	i=0
	until grep -q '"msg":"raid \(ready\|not ready\|setup failed\)"' "$log"; do
		i=$((i + 1))
		[ $i -gt 3000 ] && { fact "$s" error "no raid decision after 300s"; break; }
		sleep 0.1
	done
	t1=$(uptime_s)
	fact "$s" seconds "$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")"
	fact "$s" log "$(grep '"msg":"raid ' "$log" | head -1)"
	wget -q -O /dev/null "http://127.0.0.1:$port/readyz" && fact "$s" readyz 200 || fact "$s" readyz fail
	wget -q -O - "http://127.0.0.1:$port/metrics" | grep '^nodeagent_raid_operations_total.*} [1-9]' | while read -r l; do fact "$s" metric "$l"; done
	kill -TERM $pid
	wait $pid
	fact "$s" exit $?
	grep -q '"level":"ERROR"' "$log" && fact "$s" errors "$(grep '"level":"ERROR"' "$log" | tr '\n' ' ')"
	fact "$s" status "$(nodeagent raid status --config "/cfg/$s.yaml" --host-root / --json 2>/dev/null | tr -d '\n')"
}

# mounted SCENARIO PATH: the mount at PATH, after the agent has exited.
mounted() { fact "$1" mount "$(awk -v p="$2" '$2 == p {print $1, $3, $4}' /proc/mounts)"; }

# arrays SCENARIO: every md device with its uuid and members.
arrays() {
	for m in /sys/block/md*; do
		[ -d "$m/md" ] || continue
		fact "$1" array "$(basename "$m") $(cat "$m/md/uuid" 2>/dev/null) $(cat "$m/md/array_state") $(ls "$m/slaves" | tr '\n' ' ')"
	done
}
