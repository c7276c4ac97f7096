// Package kube is the agent's view of its own Node in the API server: read and
// patch it (labels, taints, conditions) and record events.k8s.io/v1 Events on
// it, with client-side rate limits.
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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
)

// Component is the reporting controller of the agent's Events.
const Component = "nodeagent"

// Client talks to the API server about one node.
type Client struct {
	// Clientset is the full client, for features that need more than the node.
	Clientset kubernetes.Interface
	// NodeName is the node this agent runs on.
	NodeName string

	log         *slog.Logger
	broadcaster events.EventBroadcaster
	recorder    events.EventRecorder

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
func New(cs kubernetes.Interface, node string, log *slog.Logger) *Client {
	c := &Client{Clientset: cs, NodeName: node, log: log}
	c.SetEventLimits(6, 10)
	return c
}

// SetEventLimits allows perMinute Events per reason, with burst.
func (c *Client) SetEventLimits(perMinute, burst int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit, c.burst = rate.Limit(float64(perMinute)/60), burst
	c.limiters = map[string]*rate.Limiter{}
}

// Start begins sending recorded Events to the API server until Stop.
func (c *Client) Start(ctx context.Context) {
	c.broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: c.Clientset.EventsV1()})
	c.broadcaster.StartRecordingToSink(ctx.Done())
	c.recorder = c.broadcaster.NewRecorder(scheme.Scheme, Component)
}

// Stop flushes nothing further and ends the event goroutines.
func (c *Client) Stop() {
	if c.broadcaster != nil {
		c.broadcaster.Shutdown()
	}
}

func (c *Client) nodeRef() *corev1.ObjectReference {
	// Node events use the node name as UID, as kubelet's do, so that
	// `kubectl describe node` shows them.
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: c.NodeName, UID: types.UID(c.NodeName)}
}

// Event records an Event on the Node. eventType is corev1.EventTypeNormal or
// corev1.EventTypeWarning; reason is CamelCase ("ConfigRejected"), action
// what the agent did ("Reload"). Events over the per-reason rate are dropped
// and logged at debug level.
func (c *Client) Event(eventType, reason, action, note string, args ...any) {
	if c.recorder == nil {
		return
	}
	c.mu.Lock()
	l, ok := c.limiters[reason]
	if !ok {
		l = rate.NewLimiter(c.limit, c.burst)
		c.limiters[reason] = l
	}
	c.mu.Unlock()
	if !l.Allow() {
		c.log.Debug("event dropped by rate limit", "reason", reason)
		return
	}
	c.recorder.Eventf(c.nodeRef(), nil, eventType, reason, action, note, args...)
}

// Node reads the agent's Node.
func (c *Client) Node(ctx context.Context) (*corev1.Node, error) {
	return c.Clientset.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
}

// RemoveTaint removes every taint with taint's key and effect from the Node.
// It reports whether one was there. It needs only the "patch" verb: a JSON
// patch that tests the resourceVersion it read, so a concurrent change to the
// taints makes it read and try again instead of overwriting.
func (c *Client) RemoveTaint(ctx context.Context, taint corev1.Taint) (bool, error) {
	removed := false
	err := retry.OnError(retry.DefaultRetry, isConflict, func() error {
		node, err := c.Node(ctx)
		if err != nil {
			return err
		}
		kept := []corev1.Taint{}
		for _, t := range node.Spec.Taints {
			if t.Key != taint.Key || t.Effect != taint.Effect {
				kept = append(kept, t)
			}
		}
		if len(kept) == len(node.Spec.Taints) {
			removed = false
			return nil
		}
		ops := []map[string]any{{"op": "replace", "path": "/spec/taints", "value": kept}}
		if node.ResourceVersion != "" {
			ops = append([]map[string]any{{"op": "test", "path": "/metadata/resourceVersion", "value": node.ResourceVersion}}, ops...)
		}
		patch, _ := json.Marshal(ops)
		_, err = c.Clientset.CoreV1().Nodes().Patch(ctx, c.NodeName, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: Component})
		removed = err == nil
		return err
	})
	return removed, err
}

// isConflict: a failed JSON patch "test" op is 422 Invalid on a real API
// server; an update race is 409 Conflict.
func isConflict(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsInvalid(err)
}

// SetLabel sets one label on the Node.
func (c *Client) SetLabel(ctx context.Context, key, value string) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{key: value}}})
	_, err := c.Clientset.CoreV1().Nodes().Patch(ctx, c.NodeName, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: Component})
	return err
}

// SetCondition sets one condition in the Node's status. The transition time
// moves only when the status changes, as kubelet does.
func (c *Client) SetCondition(ctx context.Context, cond corev1.NodeCondition) error {
	node, err := c.Node(ctx)
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
	_, err = c.Clientset.CoreV1().Nodes().PatchStatus(ctx, c.NodeName, patch)
	return err
}
