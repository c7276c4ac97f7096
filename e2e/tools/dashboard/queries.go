package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

// Paths relative to this module's directory.
const (
	alertsFile    = "../../../deploy/helm/nodeagent/files/alerts.yaml"
	dashboardFile = "../../../deploy/helm/nodeagent/files/dashboard.json"
	queriesFile   = "queries.json"
	repoRoot      = "../../.."
)

// A Query is one PromQL expression of a panel or an alert, as Prometheus
// runs it (Grafana's variables replaced: every job and node, a 1m rate
// window), with the series selectors it contains.
type Query struct {
	Source    string   `json:"source"`  // "alert NodeagentDown", "panel DNS cache / Requests by rcode"
	Feature   string   `json:"feature"` // "agent", "dnscache", ...
	Expr      string   `json:"expr"`
	Selectors []string `json:"selectors"`
}

// grafanaVars are replaced before a panel query is parsed or run.
var grafanaVars = strings.NewReplacer(`$__rate_interval`, `1m`, `"$job"`, `".*"`, `"$node"`, `".*"`)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert string `yaml:"alert"`
			Expr  string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// allQueries lists every alert expression, then every panel query, parsed.
func allQueries(rs []row) ([]Query, error) {
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		return nil, err
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		return nil, fmt.Errorf("%s: %w", alertsFile, err)
	}
	var qs []Query
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			qs = append(qs, Query{Source: "alert " + r.Alert, Feature: strings.TrimPrefix(g.Name, "nodeagent-"),
				Expr: strings.TrimSpace(r.Expr)})
		}
	}
	for _, r := range rs {
		for _, p := range r.Panels {
			for _, pq := range p.Queries {
				qs = append(qs, Query{Source: "panel " + r.Title + " / " + p.Title, Feature: r.Feature,
					Expr: grafanaVars.Replace(pq.Expr)})
			}
		}
	}
	p := parser.NewParser(parser.Options{})
	for i := range qs {
		expr, err := p.ParseExpr(qs[i].Expr)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", qs[i].Source, qs[i].Expr, err)
		}
		if strings.Contains(qs[i].Expr, "$") {
			return nil, fmt.Errorf("%s: %q: a Grafana variable is left unreplaced", qs[i].Source, qs[i].Expr)
		}
		seen := map[string]bool{}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				if s := selector(vs); !seen[s] {
					seen[s] = true
					qs[i].Selectors = append(qs[i].Selectors, s)
				}
			}
			return nil
		})
	}
	return qs, nil
}

// selector prints a vector selector without offset or @: what to ask
// Prometheus for to see whether the query has series to work on.
func selector(vs *parser.VectorSelector) string {
	var ms []string
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			continue
		}
		ms = append(ms, m.String())
	}
	return vs.Name + "{" + strings.Join(ms, ", ") + "}"
}

// metricNames is every metric name the queries select, sorted.
func metricNames(qs []Query) []string {
	set := map[string]bool{}
	for _, q := range qs {
		for _, s := range q.Selectors {
			set[s[:strings.IndexByte(s, '{')]] = true
		}
	}
	var names []string
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// generated is every file this command writes, with its content.
func generated() (map[string][]byte, error) {
	rs := rows()
	d, err := dashboardJSON(rs)
	if err != nil {
		return nil, err
	}
	qs, err := allQueries(rs)
	if err != nil {
		return nil, err
	}
	qj, err := marshal(qs)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{dashboardFile: d, queriesFile: qj}, nil
}

func writeGenerated() error {
	files, err := generated()
	if err != nil {
		return err
	}
	for path, b := range files {
		if err := os.WriteFile(filepath.FromSlash(path), b, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", path)
	}
	return nil
}
