package interrupt

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// facts are the node's EC2 facts behind the node_info metric.
type facts struct {
	InstanceType, Lifecycle, Zone, ZoneID, AMI string
}

var factPaths = []string{"instance-type", "instance-life-cycle", "placement/availability-zone", "placement/availability-zone-id", "ami-id"}

// readFacts reads every fact; it fails when any cannot be read.
func (f *Interrupt) readFacts(ctx context.Context) (facts, error) {
	vals := make([]string, len(factPaths))
	for i, p := range factPaths {
		b, err := get(ctx, f.imds, f.cfg.IMDS.Timeout, p)
		if err != nil {
			return facts{}, fmt.Errorf("imds %s: %w", p, err)
		}
		vals[i] = strings.TrimSpace(string(b))
	}
	return facts{vals[0], vals[1], vals[2], vals[3], vals[4]}, nil
}

// runFacts keeps node_info true: read at start, then every FactsInterval,
// changing the metric only when a fact changed. A failed read keeps the
// last facts and is retried after a jittered backoff.
func (f *Interrupt) runFacts(ctx context.Context) {
	var last facts
	have := false
	backoff := time.Second
	for {
		next := f.cfg.IMDS.FactsInterval
		got, err := f.readFacts(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			f.m.fail(reasonFacts)
			f.log.Warn("node facts not read", "err", err)
			next = min(jitter(backoff), next)
			backoff = min(2*backoff, time.Minute)
		default:
			backoff = time.Second
			if !have || got != last {
				f.m.nodeInfo.Reset()
				f.m.nodeInfo.WithLabelValues(got.InstanceType, got.Lifecycle, got.Zone, got.ZoneID, got.AMI).Set(1)
				f.log.Info("node facts", "instanceType", got.InstanceType, "lifecycle", got.Lifecycle,
					"zone", got.Zone, "zoneID", got.ZoneID, "ami", got.AMI)
				last, have = got, true
			}
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
