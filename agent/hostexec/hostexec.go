// Package hostexec is the agent's one way to run host commands (mdadm,
// mkfs.xfs, nft, mount-s3, ...). Every child gets a context, a timeout and a
// process group of its own, so cancelling kills the whole tree; its stderr is
// kept in the returned error.
package hostexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// DefaultTimeout bounds a command whose Cmd.Timeout is zero.
const DefaultTimeout = 2 * time.Minute

// maxStderr is how much of a failing command's stderr the error keeps.
const maxStderr = 4096

// Cmd is one command to run.
type Cmd struct {
	Name string
	Args []string
	// Stdin is fed to the command, if non-nil.
	Stdin []byte
	// Env is added to the agent's environment ("K=V").
	Env []string
	// Timeout bounds the run; zero means DefaultTimeout.
	Timeout time.Duration
}

// String renders the command line for logs and errors.
func (c Cmd) String() string {
	return strings.Join(append([]string{c.Name}, c.Args...), " ")
}

// Runner runs commands. Features take a Runner so that tests of their logic
// can record commands; the real one is Exec.
type Runner interface {
	// Run runs c to completion and returns its stdout. A non-zero exit is an
	// *ExitError carrying the exit code and stderr.
	Run(ctx context.Context, c Cmd) ([]byte, error)
}

// ExitError is a command that ran and failed.
type ExitError struct {
	Cmd      string
	ExitCode int // -1 when killed by a signal or the timeout
	Stderr   string
	Err      error
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

func (e *ExitError) Unwrap() error { return e.Err }

// Exec runs commands on the host with os/exec.
type Exec struct{}

// Run implements Runner.
func (Exec) Run(ctx context.Context, c Cmd) ([]byte, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// Kill the whole process group, not just the leader.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	if c.Env != nil {
		cmd.Env = append(cmd.Environ(), c.Env...)
	}
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	var stdout bytes.Buffer
	stderr := &tailBuffer{max: maxStderr}
	cmd.Stdout = &stdout
	cmd.Stderr = stderr

	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (after %s)", ctx.Err(), timeout)
	}
	code := -1
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	return stdout.Bytes(), &ExitError{Cmd: c.String(), ExitCode: code, Stderr: stderr.String(), Err: err}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }
