// Package kube is the agent's view of its own Node in the API server: read and
// patch it (labels, taints, conditions) and record events.k8s.io/v1 Events on
// it, with client-side rate limits.
package kube

import (
	"k8s.io/client-go/kubernetes"
)

// Client talks to the API server about one node.
type Client struct {
	// Clientset is the full client for features that need more than the node.
	Clientset kubernetes.Interface
	// NodeName is the node this agent runs on.
	NodeName string
}
