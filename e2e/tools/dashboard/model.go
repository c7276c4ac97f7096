package main

import "strings"

// A row is one feature's part of the dashboard.
type row struct {
	Feature string // the feature whose metrics it shows ("agent" for the agent's own)
	Title   string
	Panels  []panel
}

type panelKind int

const (
	timeseriesPanel panelKind = iota
	statPanel
)

type panel struct {
	Title, Description string
	Kind               panelKind
	Unit               string
	Width              uint32 // of 24; default 8
	Queries            []query
}

type query struct {
	Expr, Legend string
}

// sel is the label matcher every panel query starts from: the job and node
// variables, then extra matchers.
func sel(extra ...string) string {
	return "{" + strings.Join(append([]string{`job=~"$job"`, `node=~"$node"`}, extra...), ", ") + "}"
}

// rate is the per-second rate of a counter over Grafana's rate interval.
func rate(metric string, extra ...string) string {
	return "rate(" + metric + sel(extra...) + "[$__rate_interval])"
}

func ts(title, unit, desc string, qs ...query) panel {
	return panel{Title: title, Description: desc, Kind: timeseriesPanel, Unit: unit, Queries: qs}
}

func number(title, unit, desc string, qs ...query) panel {
	return panel{Title: title, Description: desc, Kind: statPanel, Unit: unit, Width: 4, Queries: qs}
}

func q(expr, legend string) query { return query{Expr: expr, Legend: legend} }

// rows is the dashboard, top to bottom.
func rows() []row {
	return []row{agentRow(), dnscacheRow(), raidRow(), imagewarmRow(), interruptRow(), conntrackRow()}
}
