# Shared by the project's scripts: phase timing and idempotent installs.
# Source it: . "$(git rev-parse --show-toplevel)/.ci/lib.sh"

NODEAGENT_CACHE=${NODEAGENT_CACHE:-$HOME/.cache/nodeagent}
export NODEAGENT_CACHE

_phase_start=$(date +%s)
# phase NAME: prints how long the work since the previous phase took.
phase() {
	local now
	now=$(date +%s)
	echo "phase: $1 took $((now - _phase_start))s"
	_phase_start=$now
}

# apt_install PKG...: installs the Debian packages that are missing, without
# starting their services (the tests start private instances).
apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	if [[ $(id -u) -ne 0 ]]; then
		echo "need root to install: ${missing[*]}" >&2
		return 1
	fi
	echo "installing ${missing[*]}"
	local policy=/usr/sbin/policy-rc.d own=""
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
		apt-get update -q
		apt-get install -y -q --no-install-recommends "${missing[@]}"
	fi
	local rc=$?
	[[ -n $own ]] && rm -f "$policy"
	return $rc
}

# go_tool NAME MODULE@VERSION: prints the path of a pinned Go tool, installing
# it into $NODEAGENT_CACHE/bin when missing or of another version.
go_tool() {
	local name=$1 pkg=$2 bin=$NODEAGENT_CACHE/bin/$1
	local mod=${pkg%@*} ver=${pkg#*@}
	if [[ ! -x $bin ]] || ! go version -m "$bin" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]].*[[:space:]]$ver([[:space:]]|$)"; then
		echo "installing $name $ver into $NODEAGENT_CACHE/bin" >&2
		mkdir -p "$NODEAGENT_CACHE/bin"
		GOBIN=$NODEAGENT_CACHE/bin go install "$pkg" >&2 || return 1
	fi
	echo "$bin"
}
