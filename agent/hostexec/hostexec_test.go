package hostexec

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunReturnsStdout(t *testing.T) {
	out, err := Exec{}.Run(context.Background(), Cmd{Name: "sh", Args: []string{"-c", "cat; echo $X"}, Stdin: []byte("in\n"), Env: []string{"X=env"}})
	if err != nil || string(out) != "in\nenv\n" {
		t.Fatalf("Run = %q, %v", out, err)
	}
}

func TestRunKeepsStderrAndExitCode(t *testing.T) {
	_, err := Exec{}.Run(context.Background(), Cmd{Name: "sh", Args: []string{"-c", "echo 'mdadm: no devices' >&2; exit 3"}})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode != 3 || !strings.Contains(err.Error(), "mdadm: no devices") {
		t.Fatalf("err = %v, want exit 3 with stderr", err)
	}
}

func TestRunMissingBinary(t *testing.T) {
	_, err := Exec{}.Run(context.Background(), Cmd{Name: "no-such-tool-nodeagent"})
	if err == nil || !strings.Contains(err.Error(), "no-such-tool-nodeagent") {
		t.Fatalf("err = %v, want it to name the command", err)
	}
}

// A timeout kills the whole process group, grandchildren included.
func TestTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := t.TempDir() + "/pid"
	start := time.Now()
	_, err := Exec{}.Run(context.Background(), Cmd{
		Name:    "sh",
		Args:    []string{"-c", "sleep 60 & echo $! > " + pidFile + "; wait"},
		Timeout: 300 * time.Millisecond,
	})
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Run took %s after a 300ms timeout", d)
	}
	data, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if pid == 0 {
		t.Fatal("grandchild pid not written")
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		// a zombie still answers kill(0); check its state.
		if st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
