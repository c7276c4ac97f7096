package deploy

import (
	"encoding/json"
	"os"
	"testing"
)

const dashboardFile = "helm/nodeagent/files/dashboard.json"

// TestDashboardConfigMap: dashboard.enabled renders a ConfigMap carrying the
// generated dashboard byte for byte, with the sidecar's label.
func TestDashboardConfigMap(t *testing.T) {
	want, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(want, &d); err != nil || d["uid"] != "nodeagent" {
		t.Fatalf("%s is not the nodeagent dashboard: %v", dashboardFile, err)
	}
	out, err := runHelm(t, "template", releaseName, chartDir, "--namespace", releaseNS,
		"--set", "dashboard.enabled=true", "--set", "dashboard.namespace=monitoring",
		"--show-only", "templates/dashboard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cm := objectsByKind(t, out)["ConfigMap"]
	if got := dig(cm, "data", "nodeagent.json"); got != string(want[:len(want)-1]) {
		t.Errorf("ConfigMap nodeagent.json differs from %s", dashboardFile)
	}
	if l := dig(cm, "metadata", "labels", "grafana_dashboard"); l != "1" {
		t.Errorf("label grafana_dashboard = %v, want \"1\"", l)
	}
	if ns := dig(cm, "metadata", "namespace"); ns != "monitoring" {
		t.Errorf("namespace = %v, want dashboard.namespace", ns)
	}
}
