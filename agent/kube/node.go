package kube

import (
	"context"

	corev1 "k8s.io/api/core/v1"
)

// NodeWatch keeps a copy of the agent's own Node: a Watch (see Watch for
// what it costs the API server) shared by every reader of the own Node.
// Take the Client's NodeWatch with Client.NodeWatch, read the latest copy
// with Node, and call Subscribe to hear of changes:
//
//	w := deps.Kube.NodeWatch()
//	changed, cancel := w.Subscribe()
//	defer cancel()
//	for {
//		if n := w.Node(); n != nil {
//			act(n.Spec.Taints)
//		}
//		select {
//		case <-ctx.Done():
//			return ctx.Err()
//		case <-changed:
//		}
//	}
//
// The watch runs between Client.Start and Client.Stop.
type NodeWatch struct {
	*Watch[*corev1.Node]
}

func newNodeWatch(c *Client) *NodeWatch {
	return &NodeWatch{newWatch(c.core, "nodes", "", c.NodeName, &corev1.Node{})}
}

// NodeWatch returns the watch of the agent's own Node.
func (c *Client) NodeWatch() *NodeWatch { return c.nodes }

// Node returns the latest copy of the Node, or nil before the first list
// (or while the Node does not exist). It is shared: do not modify it.
func (w *NodeWatch) Node() *corev1.Node {
	n, _ := w.Get()
	return n
}

// WaitForNode blocks until the Node has been seen once, or ctx is done.
func (w *NodeWatch) WaitForNode(ctx context.Context) (*corev1.Node, error) {
	changed, cancel := w.Subscribe()
	defer cancel()
	for {
		if n := w.Node(); n != nil {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}
