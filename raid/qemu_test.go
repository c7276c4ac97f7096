package raid

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The real-kernel tests: the Debian kernel booted under QEMU (TCG) with
// emulated NVMe disks (selected by serial: QEMU cannot set the model) and an
// initramfs holding the agent, mdadm and mkfs.xfs (hack/initramfs.sh). No
// udev runs in the guest, so nothing assembles arrays behind the agent's
// back. Each scenario runs the real agent daemon (raid only), waits for its
// first decision, and reports what the guest sees (GUEST lines, hack/guest.sh).
//
// Four boots, several scenarios each where they use separate disks:
//
//	boot 1 "fresh":     R (4 blank disks) created; S (1 blank) formatted;
//	                    F (foreign ext4 + blank) foreign left alone;
//	                    K (EKS setup-local-disks array, made in the guest) adopted
//	boot 2 "missing":   R without its 4th disk: nothing touched, reason; S after a reboot
//	boot 3 "reboot":    R again, disks attached in another order: assembled, checksum intact
//	boot 4 "stopstart": R replaced by blank images: created again
//
// Needs qemu-system-x86_64, the Debian kernel and busybox-static, mdadm,
// xfsprogs, cpio (hack/prereqs.sh); no root.

type qdisk struct {
	serial, file string
}

type guest struct {
	facts map[string][]string // "scenario key" -> values
	out   string
}

func (g *guest) fact(scenario, key string) string {
	v := g.facts[scenario+" "+key]
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (g *guest) all(scenario, key string) []string { return g.facts[scenario+" "+key] }

type qemuEnv struct {
	kernel, initrd, dir string
}

func qemuSetup(t *testing.T) *qemuEnv {
	t.Helper()
	var missing []string
	for _, b := range []string{"qemu-system-x86_64", "busybox", "cpio", "mdadm", "mkfs.xfs", "mkfs.ext4", "blkid"} {
		if _, err := exec.LookPath(b); err != nil {
			if _, err := os.Stat("/usr/sbin/" + b); err != nil {
				missing = append(missing, b)
			}
		}
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 {
		missing = append(missing, "/boot/vmlinuz-* (linux-image-amd64)")
	}
	if len(missing) > 0 {
		t.Skipf("QEMU tests need %s: run raid/hack/prereqs.sh", strings.Join(missing, ", "))
	}
	sort.Strings(kernels)
	kernel := kernels[len(kernels)-1]
	kver := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	if _, err := os.Stat("/lib/modules/" + kver + "/kernel/drivers/md/raid0.ko"); err != nil {
		if m, _ := filepath.Glob("/lib/modules/" + kver + "/kernel/drivers/md/raid0.ko*"); len(m) == 0 {
			t.Skipf("QEMU tests need the modules of %s (linux-image-amd64): run raid/hack/prereqs.sh", kver)
		}
	}
	if _, err := os.ReadFile(kernel); err != nil {
		t.Skipf("QEMU tests need to read %s: %v", kernel, err)
	}
	dir := t.TempDir()
	agent := filepath.Join(dir, "nodeagent")
	build := exec.Command("go", "build", "-trimpath", "-o", agent, "./cmd/nodeagent")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	initrd := filepath.Join(dir, "base.cpio.gz")
	if out, err := exec.Command("bash", "hack/initramfs.sh", initrd, agent, kver).CombinedOutput(); err != nil {
		t.Fatalf("initramfs: %v\n%s", err, out)
	}
	return &qemuEnv{kernel: kernel, initrd: initrd, dir: dir}
}

// boot runs one guest with the disks attached in the order given and
// files (path -> content) added to its root, which must hold /scenario.sh.
func (q *qemuEnv) boot(t *testing.T, name string, disks []qdisk, files map[string]string) *guest {
	t.Helper()
	extra := filepath.Join(q.dir, name+".cpio.gz")
	stage := filepath.Join(q.dir, name+".root")
	guestLib, err := os.ReadFile("hack/guest.sh")
	if err != nil {
		t.Fatal(err)
	}
	files["lib.sh"] = string(guestLib)
	for p, content := range files {
		full := filepath.Join(stage, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cpio := exec.Command("sh", "-c", "find . -mindepth 1 | cpio -o -H newc --quiet | gzip -1 > "+extra)
	cpio.Dir = stage
	if out, err := cpio.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}
	initrd := filepath.Join(q.dir, name+".initrd")
	base, _ := os.ReadFile(q.initrd)
	add, _ := os.ReadFile(extra)
	if err := os.WriteFile(initrd, append(base, add...), 0o644); err != nil { // concatenated archives
		t.Fatal(err)
	}
	// -cpu max gives the guest RDRAND, so the kernel's CRNG is ready at
	// boot: without it the agent's first getrandom(2) (Go's runtime and
	// crypto/rand) waits for jitter entropy, which under TCG on a loaded
	// host took minutes (a boot that never finished in 8m).
	args := []string{"-machine", "q35,accel=tcg", "-cpu", "max", "-m", "1024", "-smp", "1", "-nographic", "-no-reboot",
		"-kernel", q.kernel, "-initrd", initrd,
		"-append", fmt.Sprintf("console=ttyS0 panic=-1 quiet nodeagent.disks=%d", len(disks))}
	for i, d := range disks {
		args = append(args, "-drive", fmt.Sprintf("file=%s,if=none,id=d%d,format=raw", d.file, i),
			"-device", fmt.Sprintf("nvme,drive=d%d,serial=%s", i, d.serial))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Stdin = nil
	start := time.Now()
	err = cmd.Run()
	t.Logf("boot %s: %s wall, %d disks", name, time.Since(start).Round(100*time.Millisecond), len(disks))
	g := &guest{facts: map[string][]string{}, out: out.String()}
	sc := bufio.NewScanner(strings.NewReader(g.out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		rest, ok := strings.CutPrefix(line, "GUEST ")
		if !ok {
			continue
		}
		parts := strings.SplitN(rest, " ", 3)
		for len(parts) < 3 {
			parts = append(parts, "")
		}
		k := parts[0] + " " + parts[1]
		g.facts[k] = append(g.facts[k], parts[2])
	}
	if err != nil || !strings.Contains(g.out, "GUEST done") {
		t.Fatalf("guest %s did not finish: %v\n%s", name, err, tail(g.out, 6000))
	}
	t.Logf("boot %s: kernel %s", name, g.fact("kernel", "crng"))
	return g
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func imageFiles(t *testing.T, dir string, prefix string, n int) []qdisk {
	t.Helper()
	var ds []qdisk
	for i := range n {
		d := qdisk{serial: fmt.Sprintf("AWS%s%d", prefix, i), file: filepath.Join(dir, fmt.Sprintf("%s%d.img", prefix, i))}
		blank(t, d.file)
		ds = append(ds, d)
	}
	return ds
}

// blank makes (or replaces) a sparse 512 MiB image: what a stop/start gives.
func blank(t *testing.T, file string) {
	t.Helper()
	_ = os.Remove(file)
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(512 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func hashFile(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// scenarioConfig is the agent config of one scenario: raid only, disks by
// serial prefix, its own mount path.
func scenarioConfig(prefix, path string, extra string) string {
	return fmt.Sprintf(`agent:
  readiness: {startupTaint: "", readyLabel: ""}
raid:
  enabled: true
  disks: {models: [], serialPrefixes: [AWS%s]}
  mount: {path: %s}
  directories: [{path: spark, uid: 185, gid: 185, mode: "0755"}]
  reconcileInterval: 1m
%s`, prefix, path, extra)
}

// agentLog decodes the agent's first raid decision log line.
type agentLog struct {
	Msg          string  `json:"msg"`
	Action       string  `json:"action"`
	Reason       string  `json:"reason"`
	Device       string  `json:"device"`
	SetupSeconds float64 `json:"setupSeconds"`
	Err          string  `json:"err"`
	scenario     string
}

func decision(t *testing.T, g *guest, s string) agentLog {
	t.Helper()
	var l agentLog
	if err := json.Unmarshal([]byte(g.fact(s, "log")), &l); err != nil {
		t.Fatalf("%s: no decision logged (%v):\n%s", s, err, g.lines(s))
	}
	l.scenario = s
	return l
}

func status(t *testing.T, g *guest, s string) Report {
	t.Helper()
	var r Report
	if err := json.Unmarshal([]byte(g.fact(s, "status")), &r); err != nil {
		t.Fatalf("%s: raid status: %v: %q", s, err, g.fact(s, "status"))
	}
	return r
}

// lines is everything the guest said about scenario s, for failures.
func (g *guest) lines(s string) string {
	var out []string
	for _, l := range strings.Split(g.out, "\n") {
		if strings.HasPrefix(l, "GUEST "+s+" ") && !strings.HasPrefix(l, "GUEST "+s+" status") {
			out = append(out, strings.TrimRight(l, "\r"))
		}
	}
	return strings.Join(out, "\n")
}

func metricsOf(g *guest, s string) string { return strings.Join(g.all(s, "metric"), "\n") }

// arrayUUID is the uuid of the md device over the members of scenario s.
func arrayUUID(g *guest, s string) string {
	for _, a := range g.all(s, "array") {
		if f := strings.Fields(a); len(f) > 1 {
			return f[1]
		}
	}
	return ""
}

func TestQEMU(t *testing.T) {
	q := qemuSetup(t)
	dir := q.dir
	R := imageFiles(t, dir, "R", 4)
	S := imageFiles(t, dir, "S", 1)
	F := imageFiles(t, dir, "F", 2)
	K := imageFiles(t, dir, "K", 2)
	// A foreign filesystem made outside the guest, as a previous owner would.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "data", F[0].file).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	foreignHash := hashFile(t, F[0].file)

	// The file whose checksum must survive the reboots.
	write := func(s, path string) string {
		return fmt.Sprintf(`dd if=/dev/urandom of=%[2]s/spark/check bs=1M count=8 2>/dev/null && sync
fact %[1]s sha "$(sha256sum %[2]s/spark/check | cut -d' ' -f1)"
`, s, path)
	}
	check := func(s, path string) string {
		return fmt.Sprintf("fact %s sha \"$(sha256sum %s/spark/check 2>&1 | cut -d' ' -f1)\"\n", s, path)
	}
	run := func(s string, port int, path string) string {
		return fmt.Sprintf("agent %s %d\nmounted %s %s\narrays %s\n", s, port, s, path, s)
	}
	const rPath, sPath, fPath = "/mnt/scratch-r", "/mnt/scratch-s", "/mnt/scratch-f"

	var freshSHA, sSHA, freshUUID string
	t.Run("boot1", func(t *testing.T) {
		eks := fmt.Sprintf(`# the EKS AMI's setup-local-disks raid0, before the agent
k0=$(dev_by_serial %s); k1=$(dev_by_serial %s)
mdadm --create --force /dev/md/kubernetes --level=0 --name=kubernetes --raid-devices=2 /dev/$k0 /dev/$k1 >/dev/null 2>&1
mkfs.xfs -q -K -l su=8b /dev/md/kubernetes
mkdir -p /mnt/k8s-disks/0 && mount -t xfs -o noatime /dev/md/kubernetes /mnt/k8s-disks/0
echo eks-data > /mnt/k8s-disks/0/eks-file
fact eks uuid "$(cat /sys/block/$(basename $(readlink -f /dev/md/kubernetes))/md/uuid)"
`, K[0].serial, K[1].serial)
		g := q.boot(t, "boot1", slicesConcat(R, S, F, K), map[string]string{
			"scenario.sh": ". /lib.sh\n" + run("fresh", 9911, rPath) + write("fresh", rPath) +
				run("single", 9912, sPath) + write("single", sPath) +
				run("foreign", 9913, fPath) +
				eks + run("eks", 9914, "/mnt/k8s-disks/0") + "fact eks file \"$(cat /mnt/k8s-disks/0/eks-file)\"\n",
			"cfg/fresh.yaml":   scenarioConfig("R", rPath, ""),
			"cfg/single.yaml":  scenarioConfig("S", sPath, ""),
			"cfg/foreign.yaml": scenarioConfig("F", fPath, ""),
			"cfg/eks.yaml":     scenarioConfig("K", "/mnt/k8s-disks/0", ""),
		})
		t.Run("fresh", func(t *testing.T) {
			l := decision(t, g, "fresh")
			if l.Msg != "raid ready" || l.Action != "create" {
				t.Fatalf("decision %+v\n%s", l, g.lines(l.scenario))
			}
			if m := g.fact("fresh", "mount"); !strings.HasPrefix(m, "/dev/md127 xfs rw,noatime") {
				t.Errorf("mount after the agent exited: %q", m)
			}
			if g.fact("fresh", "readyz") != "200" || g.fact("fresh", "exit") != "0" {
				t.Errorf("readyz %s, exit %s", g.fact("fresh", "readyz"), g.fact("fresh", "exit"))
			}
			for _, want := range []string{`op="create",result="ok"} 1`, `op="mkfs",result="ok"} 1`, `op="mount",result="ok"} 1`} {
				if !strings.Contains(metricsOf(g, "fresh"), want) {
					t.Errorf("metrics lack %s:\n%s", want, metricsOf(g, "fresh"))
				}
			}
			st := status(t, g, "fresh")
			if !st.Ready || st.Decision.Action != ActionNone || len(st.Decision.Members) != 4 {
				t.Errorf("status after: %+v", st.Decision)
			}
			freshSHA, freshUUID = g.fact("fresh", "sha"), arrayUUID(g, "fresh")
			if len(freshSHA) != 64 || freshUUID == "" {
				t.Fatalf("sha %q uuid %q", freshSHA, freshUUID)
			}
			t.Logf("TIMING fresh (4 disks: create, mkfs.xfs, mount): agent start to mounted %ss guest-side (setupSeconds %.2f)", g.fact("fresh", "seconds"), l.SetupSeconds)
		})
		t.Run("single_disk", func(t *testing.T) {
			l := decision(t, g, "single")
			if l.Action != "format" || !strings.HasPrefix(l.Device, "nvme") {
				t.Fatalf("decision %+v\n%s", l, g.lines(l.scenario))
			}
			if m := g.fact("single", "mount"); !strings.HasPrefix(m, "/dev/nvme") || !strings.Contains(m, " xfs ") {
				t.Errorf("mount %q: want the disk itself, no md device", m)
			}
			if len(g.all("single", "array")) != 1 { // only the fresh scenario's md127
				t.Errorf("arrays: %v", g.all("single", "array"))
			}
			sSHA = g.fact("single", "sha")
		})
		t.Run("foreign_filesystem", func(t *testing.T) {
			st := status(t, g, "foreign")
			if len(st.Decision.Excluded) != 1 || st.Decision.Excluded[0].Disk.Serial != F[0].serial ||
				!strings.Contains(st.Decision.Excluded[0].Why, `ext4 filesystem labelled "data" that nodeagent did not make`) {
				t.Errorf("excluded: %+v", st.Decision.Excluded)
			}
			if !strings.Contains(st.Decision.Reason, "left alone: "+F[0].serial) {
				t.Errorf("reason does not report it: %s", st.Decision.Reason)
			}
		})
		t.Run("eks_array_adopted", func(t *testing.T) {
			l := decision(t, g, "eks")
			if l.Msg != "raid ready" || l.Action != "adopt" || !strings.Contains(l.Reason, `the host's array "kubernetes"`) {
				t.Fatalf("decision %+v\n%s", l, g.lines(l.scenario))
			}
			eksUUID := g.fact("eks", "uuid")
			found := false
			for _, a := range g.all("eks", "array") {
				found = found || strings.Contains(a, eksUUID)
			}
			if !found || len(g.all("eks", "array")) != 2 {
				t.Errorf("arrays %v: want md127 and the EKS one (uuid %s), no third", g.all("eks", "array"), eksUUID)
			}
			if strings.Contains(metricsOf(g, "eks"), `op="create"`) || strings.Contains(metricsOf(g, "eks"), `op="mkfs"`) {
				t.Errorf("the EKS array was re-created:\n%s", metricsOf(g, "eks"))
			}
			if g.fact("eks", "file") != "eks-data" {
				t.Errorf("file on the EKS array: %q", g.fact("eks", "file"))
			}
		})
	})
	if hashFile(t, F[0].file) != foreignHash {
		t.Error("foreign_filesystem: the foreign disk's bytes changed")
	}
	if t.Failed() {
		return
	}

	t.Run("boot2", func(t *testing.T) {
		before := map[string]string{}
		for _, d := range R[:3] {
			before[d.file] = hashFile(t, d.file)
		}
		g := q.boot(t, "boot2", slicesConcat(R[:3], S), map[string]string{
			"scenario.sh":      ". /lib.sh\n" + run("missing", 9911, rPath) + run("single", 9912, sPath) + check("single", sPath),
			"cfg/missing.yaml": scenarioConfig("R", rPath, ""),
			"cfg/single.yaml":  scenarioConfig("S", sPath, ""),
		})
		t.Run("one_disk_missing", func(t *testing.T) {
			l := decision(t, g, "missing")
			if l.Msg != "raid not ready" || l.Action != "blocked" || !strings.Contains(l.Reason, "has 3 of its 4 members here") {
				t.Fatalf("decision %+v\n%s", l, g.lines(l.scenario))
			}
			if g.fact("missing", "readyz") == "200" || g.fact("missing", "mount") != "" || len(g.all("missing", "array")) != 0 {
				t.Errorf("readyz %s, mount %q, arrays %v: want not ready, nothing mounted or started",
					g.fact("missing", "readyz"), g.fact("missing", "mount"), g.all("missing", "array"))
			}
			if m := metricsOf(g, "missing"); m != "" {
				t.Errorf("operations ran:\n%s", m)
			}
			for _, d := range R[:3] {
				if hashFile(t, d.file) != before[d.file] {
					t.Errorf("%s changed", d.serial)
				}
			}
		})
		t.Run("single_disk_reboot", func(t *testing.T) {
			l := decision(t, g, "single")
			if l.Action != "mount" || g.fact("single", "sha") != sSHA {
				t.Errorf("decision %+v, sha %s want %s", l, g.fact("single", "sha"), sSHA)
			}
		})
	})

	t.Run("boot3_reboot", func(t *testing.T) {
		shuffled := append([]qdisk(nil), R...)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if shuffled[0] == R[0] {
			shuffled[0], shuffled[1] = shuffled[1], shuffled[0]
		}
		g := q.boot(t, "boot3", shuffled, map[string]string{
			"scenario.sh":     ". /lib.sh\n" + run("reboot", 9911, rPath) + check("reboot", rPath),
			"cfg/reboot.yaml": scenarioConfig("R", rPath, ""),
		})
		l := decision(t, g, "reboot")
		if l.Msg != "raid ready" || l.Action != "assemble" {
			t.Fatalf("decision %+v\n%s", l, g.lines(l.scenario))
		}
		if u := arrayUUID(g, "reboot"); u != freshUUID {
			t.Errorf("array uuid %s, want %s (assembled, not re-created)", u, freshUUID)
		}
		if m := metricsOf(g, "reboot"); strings.Contains(m, `op="create"`) || strings.Contains(m, `op="mkfs"`) || !strings.Contains(m, `op="assemble",result="ok"} 1`) {
			t.Errorf("operations:\n%s", m)
		}
		if g.fact("reboot", "sha") != freshSHA {
			t.Errorf("checksum %s, want %s", g.fact("reboot", "sha"), freshSHA)
		}
		t.Logf("TIMING reboot (4 disks, shuffled: assemble, mount): agent start to mounted %ss guest-side (setupSeconds %.2f)", g.fact("reboot", "seconds"), l.SetupSeconds)
	})

	t.Run("boot4_stop_start", func(t *testing.T) {
		for _, d := range R {
			blank(t, d.file) // instance store after a stop/start
		}
		g := q.boot(t, "boot4", R, map[string]string{
			"scenario.sh":        ". /lib.sh\n" + run("stopstart", 9911, rPath),
			"cfg/stopstart.yaml": scenarioConfig("R", rPath, ""),
		})
		l := decision(t, g, "stopstart")
		if l.Msg != "raid ready" || l.Action != "create" || g.fact("stopstart", "readyz") != "200" {
			t.Fatalf("decision %+v readyz %s", l, g.fact("stopstart", "readyz"))
		}
		if u := arrayUUID(g, "stopstart"); u == "" || u == freshUUID {
			t.Errorf("uuid %q: want a new array", u)
		}
	})
}

func slicesConcat(parts ...[]qdisk) []qdisk {
	var out []qdisk
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
