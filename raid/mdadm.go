package raid

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/nodeagent/nodeagent/agent/hostexec"
)

// The command lines, each built by a pure function and golden-tested.
// Device arguments are paths in the agent's view (below the host root's
// /dev); mount and mkdir get host paths, run in the host's mount namespace.

// blkidCmd probes a device's signatures without the blkid cache (-p reads
// the device itself). Exit status 2 means nothing was found.
func blkidCmd(dev string) hostexec.Cmd {
	return hostexec.Cmd{Name: "blkid", Args: []string{"-p", "-o", "export", dev}}
}

// examineCmd reads an md member's superblock.
func examineCmd(dev string) hostexec.Cmd {
	return hostexec.Cmd{Name: "mdadm", Args: []string{"--examine", "--export", dev}}
}

// detailCmd reads a running array.
func detailCmd(md string) hostexec.Cmd {
	return hostexec.Cmd{Name: "mdadm", Args: []string{"--detail", "--export", md}}
}

// createCmd makes a RAID0 array with metadata 1.2, a stable name and
// --homehost=any, so it comes back as /dev/md/<name> on any host, not as
// md127 or <name>_0. --run answers mdadm's "continue?" prompt (there is no
// terminal); Decide has already checked every member is blank. A one-disk
// RAID0 needs --force.
func createCmd(cfg *Config, devs []string) hostexec.Cmd {
	args := []string{"--create", "/dev/md/" + cfg.Array.Name, "--run", "--level=0", "--metadata=1.2",
		"--name=" + cfg.Array.Name, "--homehost=any", "--chunk=" + strconv.Itoa(cfg.Array.ChunkKiB),
		"--raid-devices=" + strconv.Itoa(len(devs))}
	if len(devs) == 1 {
		args = append(args, "--force")
	}
	return hostexec.Cmd{Name: "mdadm", Args: append(args, devs...)}
}

// assembleCmd starts our array from exactly the members Decide named, by
// UUID: never --scan, which would also start arrays that are not ours.
func assembleCmd(cfg *Config, uuid string, devs []string) hostexec.Cmd {
	args := []string{"--assemble", "/dev/md/" + cfg.Array.Name, "--uuid=" + uuid}
	return hostexec.Cmd{Name: "mdadm", Args: append(args, devs...)}
}

// zeroCmd removes our superblock from a member (onIncomplete: recreate).
func zeroCmd(dev string) hostexec.Cmd {
	return hostexec.Cmd{Name: "mdadm", Args: []string{"--zero-superblock", dev}}
}

// mkfsCmd makes the filesystem, aligned to the stripe when it is an array
// of members disks. -K / nodiscard: no TRIM of the whole device at mkfs
// (instance-store disks arrive blank; a TRIM pass costs minutes on large
// disks).
func mkfsCmd(cfg *Config, dev string, members int) hostexec.Cmd {
	label := cfg.Filesystem.Label
	if cfg.Filesystem.Type == FSExt4 {
		ext := "nodiscard"
		if members > 1 {
			stride := cfg.Array.ChunkKiB / 4 // 4 KiB blocks
			ext += fmt.Sprintf(",stride=%d,stripe_width=%d", stride, stride*members)
		}
		return hostexec.Cmd{Name: "mkfs.ext4", Args: []string{"-q", "-F", "-L", label, "-m", "0", "-E", ext, dev}}
	}
	args := []string{"-q", "-K", "-L", label}
	if members > 1 {
		args = append(args, "-d", fmt.Sprintf("su=%dk,sw=%d", cfg.Array.ChunkKiB, members))
	}
	return hostexec.Cmd{Name: "mkfs.xfs", Args: append(args, dev)}
}

// inNamespace wraps a command to run in the host's mount namespace when the
// config says so: nsenter enters PID 1's namespace (the agent has hostPID),
// then runs the host's own binary there.
func (f *Feature) inNamespace(c hostexec.Cmd) hostexec.Cmd {
	if f.cfg.Mount.Namespace != MountNamespaceHost {
		return c
	}
	// Joined, not resolved: ns/mnt is a magic link ("mnt:[4026531841]").
	ns := filepath.Join(f.host.Proc(), "1", "ns", "mnt")
	args := append([]string{"--mount=" + ns, "--", c.Name}, c.Args...)
	return hostexec.Cmd{Name: "nsenter", Args: args, Timeout: c.Timeout}
}

// mkdirCmd makes the mount point.
func (f *Feature) mkdirCmd() hostexec.Cmd {
	return f.inNamespace(hostexec.Cmd{Name: "mkdir", Args: []string{"-p", f.hostPath(f.cfg.Mount.Path)}})
}

// mountCmd mounts dev (a kernel name) at the path.
func (f *Feature) mountCmd(dev, fsType string) hostexec.Cmd {
	return f.inNamespace(hostexec.Cmd{Name: "mount", Args: []string{"-t", fsType, "-o", f.cfg.mountOptions(),
		f.devPath(dev), f.hostPath(f.cfg.Mount.Path)}})
}

// hostPath is where a host path is, in the namespace the mount commands run in.
func (f *Feature) hostPath(p string) string {
	if f.cfg.Mount.Namespace == MountNamespaceHost {
		return p
	}
	return f.host.Path(p)
}

// devPath is a device node, in the namespace the mount commands run in.
func (f *Feature) devPath(name string) string {
	if f.cfg.Mount.Namespace == MountNamespaceHost {
		return "/dev/" + name
	}
	return f.host.Dev(name)
}
