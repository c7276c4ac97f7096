// Command dashboard generates nodeagent's Grafana dashboard
// (deploy/helm/nodeagent/files/dashboard.json) with the Grafana Foundation
// SDK, and the list of every PromQL query the dashboard and the alerts use
// (queries.json, read by the e2e Prometheus check). Its tests keep both
// files equal to what the code generates, and keep every metric name the
// queries use equal to a metric the agent registers (the feature READMEs'
// metric tables, which each feature's own test keeps equal to its registry).
//
// It is a module of its own so that the SDK and the Prometheus query parser
// never enter the agent's go.mod. Regenerate with:
//
//	cd e2e/tools/dashboard && go run .
package main
