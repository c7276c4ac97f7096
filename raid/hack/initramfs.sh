#!/usr/bin/env bash
# initramfs.sh OUT.cpio.gz AGENT [KERNEL_VERSION]
#
# Builds the base initramfs the raid QEMU tests boot (raid/qemu_test.go):
# static busybox, mdadm, mkfs.xfs, blkid and wipefs with the libraries ldd
# lists, the Debian kernel's nvme/md/raid0/xfs modules in load order, the agent
# binary, and an /init that mounts proc/sys/devtmpfs, loads the modules,
# waits for the NVMe disks the kernel command line announces
# (nodeagent.disks=N), runs /scenario.sh (from a second cpio archive appended
# per boot) and powers off. Without udev nothing assembles arrays behind the
# agent's back, as on a node whose AMI does not.
set -euo pipefail
out=$1 agent=$2
kver=${3:-$(ls /lib/modules | sort -V | tail -1)}
mods=/lib/modules/$kver/kernel

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,mnt,etc,lib/modules}

cp "$(command -v busybox)" "$root/bin/busybox"
file "$root/bin/busybox" 2>/dev/null | grep -q static || ldd "$root/bin/busybox" 2>&1 | grep -q "not a dynamic" ||
	{ echo "initramfs: busybox is not static (install busybox-static)" >&2; exit 1; }

# copy_bin PATH: the binary and every library it links, at the same paths.
copy_bin() {
	local bin=$1 lib
	install -D -m 0755 "$bin" "$root/sbin/$(basename "$bin")"
	for lib in $(ldd "$bin" | grep -oE '/[^ ]+'); do
		[[ -e $root$lib ]] || install -D -m 0755 "$lib" "$root$lib"
	done
}
for b in mdadm mkfs.xfs blkid wipefs; do
	copy_bin "$(PATH=/usr/sbin:/sbin:/usr/bin:$PATH command -v $b)"
done
install -D -m 0755 "$agent" "$root/bin/nodeagent"

# Module load order (TESTBED.md): checksums, NVMe, md + raid0, then xfs.
order="crct10dif_common crct10dif_generic crc64 crc64_rocksoft_generic crc-t10dif crc64-rocksoft t10-pi
nvme-core nvme md-mod raid0 crc32c_generic libcrc32c xfs"
: >"$root/lib/modules/order"
for m in $order; do
	f=$(find "$mods" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -1)
	[[ -n $f ]] || { echo "initramfs: module $m not found below $mods" >&2; exit 1; }
	case $f in
	*.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
	*.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
	*) cp "$f" "$root/lib/modules/$m.ko" ;;
	esac
	echo "$m" >>"$root/lib/modules/order"
done

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "GUEST insmod $m failed"; done
want=$(sed -n 's/.*nodeagent.disks=\([0-9]*\).*/\1/p' /proc/cmdline)
i=0
while [ "$(ls /sys/block | grep -c '^nvme')" -lt "${want:-0}" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
echo "GUEST up $(cut -d' ' -f1 /proc/uptime) disks=$(ls /sys/block | grep -c '^nvme')"
echo "GUEST kernel crng $(dmesg | grep -m1 'crng init done' || echo 'crng not ready yet')"
sh /scenario.sh 2>&1
echo "GUEST done rc=$?"
sync
poweroff -f
INIT
chmod 0755 "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
