#!/usr/bin/env bash
# imagewarm's test prerequisites: a real containerd (with runc) and a real
# registry (Debian's docker-registry, distribution 2.8). The tests start
# private instances in temp dirs; the packages' own services stay stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/lib.sh
apt_install containerd runc docker-registry
