package agent

import (
	"context"
	"time"
)

// handoverPoll is how often a successor's readiness is checked.
const handoverPoll = 10 * time.Millisecond

// handover replaces the running instance of a feature whose Spec allows it
// (see Handover): the new instance starts, and the old one stops once the
// new one is ready. It returns false, having changed nothing, when it does
// not apply (nothing running, the section disabled, or the new instance
// cannot be built): the caller then stops and starts as usual.
func (a *Agent) handover(ctx, featCtx context.Context, s Spec, cfg Config) bool {
	prev := a.sup.running(s.Name)
	if s.handover == nil || prev == nil || !cfg.IsEnabled() {
		return false
	}
	log := a.log.With("feature", s.Name)
	reg := &instanceRegisterer{reg: a.reg, deferred: true}
	f, err := buildGuarded(s, cfg, a.deps(log, reg))
	if err != nil {
		return false
	}
	s.handover(f, prev.feature)
	log.Info("feature starting beside the instance it replaces")
	next := a.sup.start(featCtx, s.Name, f, reg.unregisterAll)

	timeout := a.cfg.Load().Agent.ShutdownTimeout
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	waitReady(wctx, next)
	if wctx.Err() != nil && ctx.Err() == nil {
		log.Warn("new instance not ready in time; stopping the old one anyway", "timeout", timeout)
	}

	sctx, cancelStop := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancelStop()
	if !a.sup.stopUnit(sctx, s.Name, prev) {
		log.Error("previous instance did not stop; the new one serves without metrics until the agent restarts")
		return true
	}
	if err := reg.activate(); err != nil {
		log.Error("metrics of the new instance not registered", "err", err)
	}
	return true
}

// waitReady returns once u's feature is ready (at once if it cannot say),
// its Run has returned, or ctx is done.
func waitReady(ctx context.Context, u *unit) {
	rc, ok := u.feature.(ReadyChecker)
	if !ok {
		return
	}
	t := time.NewTicker(handoverPoll)
	defer t.Stop()
	for rc.Ready() != nil {
		select {
		case <-ctx.Done():
			return
		case <-u.done:
			return
		case <-t.C:
		}
	}
}
