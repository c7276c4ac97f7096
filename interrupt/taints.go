package interrupt

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodeagent/nodeagent/agent"
)

// watchTaints turns the configured taint keys on the own Node (Karpenter's
// disruption taint, NTH's taints) into notices, from the agent's one watch
// of its Node: no polling.
func (f *Interrupt) watchTaints(ctx context.Context, out chan<- noticeEvent) {
	changed, cancel := f.nodes.Subscribe()
	defer cancel()
	visible := map[string]Notice{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		node := f.nodes.Node()
		if node == nil {
			continue
		}
		for _, ev := range taintEvents(f.cfg.Taints, node.Spec.Taints, visible, f.now()) {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// taintEvents compares the Node's taints with the notices already visible
// and returns what appeared or went; it updates visible.
func taintEvents(triggers []TaintTrigger, taints []corev1.Taint, visible map[string]Notice, now time.Time) []noticeEvent {
	var events []noticeEvent
	present := map[string]bool{}
	for _, tr := range triggers {
		for _, t := range taints {
			if t.Key != tr.Key {
				continue
			}
			id := "taint/" + t.Key
			present[id] = true
			if _, ok := visible[id]; !ok {
				n := Notice{Kind: tr.Kind, Source: SourceTaint, ID: id, Detail: t.ToString(), Seen: now}
				visible[id] = n
				events = append(events, noticeEvent{notice: n})
			}
			break
		}
	}
	for id, n := range visible {
		if !present[id] {
			delete(visible, id)
			events = append(events, noticeEvent{notice: n, withdrawn: true})
		}
	}
	return events
}

// nodeWatch returns the agent's watch of its Node, the one every feature
// shares.
func nodeWatch(deps agent.Deps) nodeSource {
	if deps.Kube == nil {
		return nil
	}
	return deps.Kube.NodeWatch()
}
