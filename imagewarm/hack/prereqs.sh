#!/usr/bin/env bash
# imagewarm's test prerequisites: a real containerd (with runc) and a real
# registry (Debian's docker-registry, distribution 2.8); for the S3 mounts,
# the FUSE clients s3fs and rclone and a real S3 server (versitygw, pinned);
# systemd, which the supervisor test boots in namespaces of its own.
# The tests start private instances in temp dirs; the packages' own services
# stay stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/lib.sh
apt_install containerd runc docker-registry s3fs rclone fuse3 systemd
go_tool versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0 >/dev/null
