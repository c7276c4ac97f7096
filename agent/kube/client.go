// Package kube is the agent's view of the API server: its own Node (watched
// once for every reader, see NodeWatch; remove a taint, set labels and
// conditions, each written only when it changes), events.k8s.io/v1 Events on it
// with client-side rate limits, and the few objects features need (a watched
// Service, see Watch).
//
// It speaks to the API server with client-go's REST client and a scheme of
// its own holding only core/v1 and events.k8s.io/v1. client-go's typed
// clientset, and its tools/events recorder, import k8s.io/client-go/kubernetes/scheme,
// which registers every API group at start-up: measured on linux/amd64, that
// costs about 8 MB of resident memory on every node for types the agent never
// uses (a binary with the clientset idles at 24.8 MB, one with this client at
// about 17 MB). Add a resource here when a feature needs one.
package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

// Component is the reporting controller of the agent's Events.
const Component = "nodeagent"

// eventQueue bounds the Events waiting to be sent; more are dropped.
const eventQueue = 64

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	// Registering two groups in a private scheme: cheap, and no I/O.
	must(corev1.AddToScheme(scheme))
	must(eventsv1.AddToScheme(scheme))
	must(policyv1.AddToScheme(scheme))
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// Client talks to the API server about one node.
type Client struct {
	// NodeName is the node this agent runs on.
	NodeName string

	core   rest.Interface // /api/v1
	events rest.Interface // /apis/events.k8s.io/v1
	policy rest.Interface // /apis/policy/v1
	log    *slog.Logger
	queue  chan *eventsv1.Event
	done   chan struct{}
	nodes  *NodeWatch
	// stopWatch ends the NodeWatch; watchDone is closed once it has.
	stopWatch context.CancelFunc
	watchDone chan struct{}

	mu       sync.Mutex
	limit    rate.Limit
	burst    int
	limiters map[string]*rate.Limiter // by reason
}

// RESTConfig returns the client config: kubeconfig if set, in-cluster
// otherwise. It returns (nil, nil) when neither is available, meaning the
// agent runs without a cluster.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if err == rest.ErrNotInCluster {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	// A node agent on every node must be gentle with the API server.
	cfg.QPS, cfg.Burst = 5, 10
	cfg.UserAgent = Component
	return cfg, nil
}

// New returns a client for node. Call Start before recording Events and
// Stop when done.
func New(cfg *rest.Config, node string, log *slog.Logger) (*Client, error) {
	core, err := restClient(cfg, "/api", corev1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	events, err := restClient(cfg, "/apis", eventsv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	policy, err := restClient(cfg, "/apis", policyv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	c := &Client{NodeName: node, core: core, events: events, policy: policy, log: log}
	c.nodes = newNodeWatch(c)
	c.SetEventLimits(6, 10)
	return c, nil
}

func restClient(cfg *rest.Config, apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath = apiPath
	c.GroupVersion = &gv
	c.NegotiatedSerializer = codecs.WithoutConversion()
	c.ContentType = runtime.ContentTypeJSON
	return rest.RESTClientFor(c)
}

// SetEventLimits allows perMinute Events per reason, with burst.
func (c *Client) SetEventLimits(perMinute, burst int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit, c.burst = rate.Limit(float64(perMinute)/60), burst
	c.limiters = map[string]*rate.Limiter{}
}

// Start watches the own Node (NodeWatch) and sends recorded Events to the
// API server until ctx is done or Stop.
func (c *Client) Start(ctx context.Context) {
	wctx, cancel := context.WithCancel(ctx)
	c.stopWatch, c.watchDone = cancel, make(chan struct{})
	go func() {
		defer close(c.watchDone)
		c.nodes.Run(wctx)
	}()
	c.queue = make(chan *eventsv1.Event, eventQueue)
	c.done = make(chan struct{})
	go func() {
		defer close(c.done)
		for ev := range c.queue {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := c.events.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(sctx).Error()
			cancel()
			if err != nil {
				c.log.Warn("event not recorded", "reason", ev.Reason, "err", err)
			}
		}
	}()
}

// Stop ends the Node watch and sends the Events already queued, then returns.
func (c *Client) Stop() {
	if c.queue == nil {
		return
	}
	c.stopWatch()
	<-c.watchDone
	close(c.queue)
	<-c.done
	c.queue = nil
}

// Event records an Event on the Node. eventType is corev1.EventTypeNormal or
// corev1.EventTypeWarning; reason is CamelCase ("ConfigRejected"), action
// what the agent did ("Reload"). Events over the per-reason rate, or while
// the queue is full, are dropped and logged at debug level.
func (c *Client) Event(eventType, reason, action, note string, args ...any) {
	// The node name as UID, as kubelet does, so `kubectl describe node` shows them.
	// Node events live in "default", as kubelet's do.
	c.record(metav1.NamespaceDefault, corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: c.NodeName, UID: types.UID(c.NodeName)},
		eventType, reason, action, note, args...)
}

// record queues an Event about regarding, in namespace.
func (c *Client) record(namespace string, regarding corev1.ObjectReference, eventType, reason, action, note string, args ...any) {
	if c.queue == nil {
		return
	}
	c.mu.Lock()
	key := reason // per reason on the Node, per reason and object otherwise
	if regarding.Kind != "Node" {
		key = reason + "/" + regarding.Namespace + "/" + regarding.Name
	}
	l, ok := c.limiters[key]
	if !ok {
		if len(c.limiters) >= 4096 { // pods come and go: bound the map
			c.limiters = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(c.limit, c.burst)
		c.limiters[key] = l
	}
	c.mu.Unlock()
	if !l.Allow() {
		c.log.Debug("event dropped by rate limit", "reason", reason)
		return
	}
	if len(args) > 0 {
		note = fmt.Sprintf(note, args...)
	}
	if len(note) > 1024 { // the API server's limit on Event.note
		note = note[:1021] + "..."
	}
	now := time.Now()
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", regarding.Name, now.UnixNano()),
			Namespace: namespace,
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: Component,
		ReportingInstance:   Component + "-" + c.NodeName,
		Action:              action,
		Reason:              reason,
		Regarding:           regarding,
		Note:                note,
		Type:                eventType,
	}
	select {
	case c.queue <- ev:
	default:
		c.log.Debug("event dropped: queue full", "reason", reason)
	}
}

// Node reads the agent's Node from the API server. Most readers want
// NodeWatch().Node() instead, which costs no request.
func (c *Client) Node(ctx context.Context) (*corev1.Node, error) {
	node := &corev1.Node{}
	err := c.core.Get().Resource("nodes").Name(c.NodeName).Do(ctx).Into(node)
	return node, err
}

// current is the watched copy of the Node, or a GET while the watch has
// none yet (before its first list, or while it fails: then the writers
// below still work, at the old cost). Writers compare against it and send
// nothing when the Node already says what they would write.
func (c *Client) current(ctx context.Context) (*corev1.Node, error) {
	if n := c.nodes.Node(); n != nil {
		return n, nil
	}
	return c.Node(ctx)
}

// ServiceWatch returns a Watch of the Service namespace/name; it runs while
// its Run does.
func (c *Client) ServiceWatch(namespace, name string) *Watch[*corev1.Service] {
	return newWatch(c.core, "services", namespace, name, &corev1.Service{})
}

func (c *Client) patchNode(ctx context.Context, pt types.PatchType, patch []byte, subresource ...string) error {
	return c.core.Patch(pt).Resource("nodes").Name(c.NodeName).SubResource(subresource...).
		Param("fieldManager", Component).Body(patch).Do(ctx).Error()
}

// RemoveTaint removes every taint with taint's key and effect from the Node.
// It reports whether one was there. It needs only the "patch" verb: a JSON
// patch that tests the resourceVersion it read, so a concurrent change to the
// taints makes it read and try again instead of overwriting.
func (c *Client) RemoveTaint(ctx context.Context, taint corev1.Taint) (bool, error) {
	return c.editTaints(ctx, func(taints []corev1.Taint) []corev1.Taint {
		kept := []corev1.Taint{}
		for _, t := range taints {
			if t.Key != taint.Key || t.Effect != taint.Effect {
				kept = append(kept, t)
			}
		}
		if len(kept) == len(taints) {
			return nil
		}
		return kept
	})
}

// editTaints replaces the Node's taints with what edit returns for them
// (nil: nothing to change) and reports whether it changed the Node. It
// needs only the "patch" verb: a JSON patch that tests the resourceVersion
// it read, so a concurrent change makes it read and try again instead of
// overwriting.
func (c *Client) editTaints(ctx context.Context, edit func([]corev1.Taint) []corev1.Taint) (bool, error) {
	changed := false
	read := c.current // the first try trusts the watch; a conflict reads afresh
	err := retry.OnError(retry.DefaultRetry, isConflict, func() error {
		node, err := read(ctx)
		read = c.Node
		if err != nil {
			return err
		}
		taints := edit(node.Spec.Taints)
		if taints == nil {
			changed = false
			return nil
		}
		ops := []map[string]any{{"op": "add", "path": "/spec/taints", "value": taints}}
		if node.ResourceVersion != "" {
			ops = append([]map[string]any{{"op": "test", "path": "/metadata/resourceVersion", "value": node.ResourceVersion}}, ops...)
		}
		patch, _ := json.Marshal(ops)
		err = c.patchNode(ctx, types.JSONPatchType, patch)
		changed = err == nil
		return err
	})
	return changed, err
}

// isConflict: a failed JSON patch "test" op is 422 Invalid on a real API
// server; an update race is 409 Conflict.
func isConflict(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsInvalid(err)
}

func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// SetLabel sets one label on the Node; nothing is sent when it is set already.
func (c *Client) SetLabel(ctx context.Context, key, value string) error {
	node, err := c.current(ctx)
	if err != nil {
		return err
	}
	if v, ok := node.Labels[key]; ok && v == value {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{key: value}}})
	return c.patchNode(ctx, types.MergePatchType, patch)
}

// RemoveLabel removes one label from the Node (a merge patch with null; the
// API server treats removing a missing label as no change). It does not
// consult the watched copy: right after a SetLabel that copy may not show
// the label yet, and the removal would be skipped. Callers remove on change.
func (c *Client) RemoveLabel(ctx context.Context, key string) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: nil}}})
	return c.patchNode(ctx, types.MergePatchType, patch)
}

// SetCapacity advertises an extended resource in the Node's status
// capacity (kubelet derives allocatable from it), as the Kubernetes docs'
// "advertise extended resources for a node" does.
func (c *Client) SetCapacity(ctx context.Context, name string, q resource.Quantity) error {
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"capacity": map[string]string{name: q.String()}}})
	return c.patchNode(ctx, types.MergePatchType, patch, "status")
}

// SetCondition sets one condition in the Node's status. The transition time
// moves only when the status changes, as kubelet does; nothing is sent when
// the Node already has the condition with this status, reason and message.
func (c *Client) SetCondition(ctx context.Context, cond corev1.NodeCondition) error {
	node, err := c.current(ctx)
	if err != nil {
		return err
	}
	now := metav1.NewTime(time.Now())
	cond.LastHeartbeatTime = now
	cond.LastTransitionTime = now
	for _, old := range node.Status.Conditions {
		if old.Type == cond.Type {
			if old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message {
				return nil
			}
			if old.Status == cond.Status {
				cond.LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	// conditions merge by type in a strategic merge patch.
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	return c.patchNode(ctx, types.StrategicMergePatchType, patch, "status")
}

// Secret reads one Secret by name (RBAC: get on that name only).
func (c *Client) Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := c.core.Get().Namespace(namespace).Resource("secrets").Name(name).Do(ctx).Into(s)
	return s, err
}
