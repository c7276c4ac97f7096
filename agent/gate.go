package agent

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ConditionType is the Node condition the agent keeps: True when every
// gating feature is ready.
const ConditionType corev1.NodeConditionType = "NodeAgentReady"

// gateState is what the gate loop remembers between rounds.
type gateState struct {
	released bool   // taint removed and label set, this process
	blocking string // last reported reason, to report changes once
}

// readiness evaluates every feature; ready is true when all gating features are.
func (a *Agent) readiness() (ready bool, statuses []Status, blocking []string) {
	statuses = a.sup.statuses(a.cfg.Load().Agent.Readiness.GatingFeatures)
	for _, st := range statuses {
		if st.Gating && !st.Ready {
			blocking = append(blocking, st.Feature+": "+st.Reason)
		}
	}
	return len(blocking) == 0, statuses, blocking
}

// gateLoop keeps the node's readiness signals true: the nodeagent_node_ready
// gauge always; with a cluster, the NodeAgentReady condition, and once every
// gating feature is ready, removal of the startup taint and the ready label.
// The taint is never put back: it gates a node's start, not its life.
func (a *Agent) gateLoop(ctx context.Context) {
	for {
		ready, _, blocking := a.readiness()
		if ready {
			a.metrics.nodeReady.Set(1)
		} else {
			a.metrics.nodeReady.Set(0)
		}
		if a.opts.Kube != nil {
			a.syncNode(ctx, ready, blocking)
		}
		a.gateRounds.Add(1)
		t := time.NewTimer(a.cfg.Load().Agent.Readiness.CheckInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (a *Agent) syncNode(ctx context.Context, ready bool, blocking []string) {
	k := a.opts.Kube
	rc := a.cfg.Load().Agent.Readiness
	events := a.cfg.Load().Agent.Events.Enabled
	cond := corev1.NodeCondition{Type: ConditionType, Status: corev1.ConditionTrue, Reason: "FeaturesReady", Message: "every gating feature is ready"}
	if !ready {
		cond.Status, cond.Reason, cond.Message = corev1.ConditionFalse, "FeaturesNotReady", strings.Join(blocking, "; ")
	}
	if err := k.SetCondition(ctx, cond); err != nil && ctx.Err() == nil {
		a.log.Warn("node condition not updated", "err", err)
	}

	reason := strings.Join(blocking, "; ")
	if !ready && reason != a.gate.blocking {
		a.log.Warn("node not ready: gating features are not ready", "blocking", blocking, "tainted", !a.gate.released)
		if events {
			k.Event(corev1.EventTypeWarning, "FeaturesNotReady", "ReadinessGate", "%s", reason)
		}
	}
	a.gate.blocking = reason
	if !ready || a.gate.released {
		return
	}
	removed := false
	if rc.StartupTaint != "" {
		taint, _ := ParseTaint(rc.StartupTaint) // validated
		var err error
		if removed, err = k.RemoveTaint(ctx, taint); err != nil {
			a.log.Error("startup taint not removed", "taint", rc.StartupTaint, "err", err)
			return
		}
	}
	if rc.ReadyLabel != "" {
		if err := k.SetLabel(ctx, rc.ReadyLabel, "true"); err != nil {
			a.log.Error("ready label not set", "label", rc.ReadyLabel, "err", err)
			return
		}
	}
	a.gate.released = true
	a.log.Info("node ready: startup taint removed, label set", "taint", rc.StartupTaint, "removed", removed, "label", rc.ReadyLabel)
	if events {
		k.Event(corev1.EventTypeNormal, "NodeReady", "ReadinessGate", "every gating feature is ready; removed taint %q, set label %s=true", rc.StartupTaint, rc.ReadyLabel)
	}
}
