package kube

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"
)

// NodeWatch keeps a copy of the agent's own Node, fed by one watch on the
// API server: client-go's reflector lists the one Node (field selector
// metadata.name=NODE), then watches from the resourceVersion it got,
// resumes a broken watch from the last version seen, lists again when that
// version is too old (410 Gone), and backs off with jitter on errors, so a
// fleet that loses its API server does not come back in lockstep. At idle
// that is a few requests per hour per node, where polling a GET every few
// seconds was hundreds.
//
// Every reader of the own Node shares it: take the Client's NodeWatch with
// Client.NodeWatch, read the latest copy with Node, and call Subscribe to
// hear of changes:
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
	lw *cache.ListWatch

	mu   sync.Mutex
	node *corev1.Node
	subs map[chan struct{}]struct{}
}

func newNodeWatch(c *Client) *NodeWatch {
	return &NodeWatch{
		lw:   cache.NewListWatchFromClient(c.core, "nodes", "", fields.OneTermEqualSelector("metadata.name", c.NodeName)),
		subs: map[chan struct{}]struct{}{},
	}
}

// NodeWatch returns the watch of the agent's own Node.
func (c *Client) NodeWatch() *NodeWatch { return c.nodes }

// Node returns the latest copy of the Node, or nil before the first list
// (or while the Node does not exist). It is shared: do not modify it.
func (w *NodeWatch) Node() *corev1.Node {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.node
}

// Subscribe returns a channel that receives after each change of the Node
// (a new resourceVersion, its first sight, or its deletion). Changes that
// arrive while the receiver is busy are coalesced into one: read Node for
// the latest state. Call cancel when done.
func (w *NodeWatch) Subscribe() (changed <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.subs[ch] = struct{}{}
	if w.node != nil {
		ch <- struct{}{} // a late subscriber hears of the Node already there
	}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.subs, ch)
		w.mu.Unlock()
	}
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

func (w *NodeWatch) set(n *corev1.Node) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n != nil && w.node != nil && n.ResourceVersion == w.node.ResourceVersion {
		return // a relist that found nothing new
	}
	w.node = n
	for ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// run feeds the copy until ctx is done.
func (w *NodeWatch) run(ctx context.Context) {
	set := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok {
			w.set(n)
		}
	}
	_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: w.lw,
		ObjectType:    &corev1.Node{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    set,
			UpdateFunc: func(_, obj any) { set(obj) },
			DeleteFunc: func(any) { w.set(nil) },
		},
	})
	ctrl.RunWithContext(ctx)
}
