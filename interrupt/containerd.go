package interrupt

import (
	"context"
	"errors"
	"fmt"

	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// tasks is what the feature needs of containerd: signal a container's main
// process, and wait for it to exit.
type tasks interface {
	Kill(ctx context.Context, containerID string, sig unix.Signal) error
	Wait(ctx context.Context, containerID string) (exitCode uint32, err error)
	Close() error
}

// errGone: containerd has no task for the container (it exited, or never ran).
var errGone = errors.New("no such container task")

// containerdTasks speaks containerd's task service over its gRPC socket
// with only the generated API package (github.com/containerd/containerd/api),
// not the full client, which would pull in content, snapshot and image code
// the agent never runs here.
type containerdTasks struct {
	conn *grpc.ClientConn
	svc  tasksapi.TasksClient
	ns   string
}

// newContainerdTasks prepares a client for socket in namespace ns; gRPC
// connects on first use, so this does no I/O.
func newContainerdTasks(socket, ns string) (*containerdTasks, error) {
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("localhost"))
	if err != nil {
		return nil, fmt.Errorf("containerd %s: %w", socket, err)
	}
	return &containerdTasks{conn: conn, svc: tasksapi.NewTasksClient(conn), ns: ns}, nil
}

func (c *containerdTasks) ctx(ctx context.Context) context.Context {
	// containerd's namespace travels as this gRPC header.
	return metadata.AppendToOutgoingContext(ctx, "containerd-namespace", c.ns)
}

// Kill sends sig to the container's init process.
func (c *containerdTasks) Kill(ctx context.Context, id string, sig unix.Signal) error {
	_, err := c.svc.Kill(c.ctx(ctx), &tasksapi.KillRequest{ContainerID: id, Signal: uint32(sig)})
	return taskErr(err)
}

// Wait blocks until the container's init process exits, or ctx is done.
func (c *containerdTasks) Wait(ctx context.Context, id string) (uint32, error) {
	r, err := c.svc.Wait(c.ctx(ctx), &tasksapi.WaitRequest{ContainerID: id})
	if err != nil {
		return 0, taskErr(err)
	}
	return r.ExitStatus, nil
}

func (c *containerdTasks) Close() error { return c.conn.Close() }

func taskErr(err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.NotFound:
		return fmt.Errorf("%w: %s", errGone, status.Convert(err).Message())
	case codes.Canceled:
		return fmt.Errorf("%w: %v", context.Canceled, err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
	}
	return err
}
