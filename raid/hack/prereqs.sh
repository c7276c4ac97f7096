#!/usr/bin/env bash
# prereqs.sh installs what the raid tests use; idempotent: the Debian kernel
# (with md and nvme as modules), QEMU to boot it under TCG, and the static
# busybox, mdadm, xfsprogs and cpio that the guest's initramfs is built from
# (raid/hack/initramfs.sh), only when missing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../.ci/lib.sh"

apt_install qemu-system-x86 linux-image-amd64 busybox-static mdadm xfsprogs e2fsprogs cpio util-linux gzip
phase "raid apt packages"
