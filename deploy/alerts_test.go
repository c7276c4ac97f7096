package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	alertsFile    = "helm/nodeagent/files/alerts.yaml"
	alertTestsDir = "testdata/alerts"
	runbooksFile  = "runbooks.md"
	runbookBase   = "https://github.com/nodeagent/nodeagent/blob/main/deploy/runbooks.md#"
)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func alertRules(t *testing.T) ruleFile {
	t.Helper()
	var f ruleFile
	readYAML(t, alertsFile, &f)
	return f
}

func alertNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, g := range alertRules(t).Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
		}
	}
	return names
}

// promtool finds promtool: $PROMTOOL, then PATH (Debian's prometheus
// package, which hack/prereqs.sh installs). It skips the test without one.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	t.Skip("promtool not found ($PROMTOOL, PATH): deploy/hack/prereqs.sh installs it (Debian package prometheus)")
	return ""
}

// TestAlertsPromtool checks the rules file and runs every alert's unit
// tests (testdata/alerts/*.yaml) with promtool.
func TestAlertsPromtool(t *testing.T) {
	bin := promtool(t)
	if out, err := exec.Command(bin, "check", "rules", alertsFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", alertsFile, err, out)
	}
	tests, err := filepath.Glob(filepath.Join(alertTestsDir, "*.yaml"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no promtool tests in %s: %v", alertTestsDir, err)
	}
	for _, f := range tests {
		cmd := exec.Command(bin, "test", "rules", filepath.Base(f))
		cmd.Dir = alertTestsDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool test rules %s: %v\n%s", f, err, out)
		}
	}
}

// TestAlertsEachTested: every alert has a promtool case where it fires and
// one where it does not, and every case names an alert that exists.
func TestAlertsEachTested(t *testing.T) {
	type testFile struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name  string `yaml:"name"`
			Cases []struct {
				Alert     string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	tests, _ := filepath.Glob(filepath.Join(alertTestsDir, "*.yaml"))
	names := alertNames(t)
	for _, f := range tests {
		var tf testFile
		readYAML(t, f, &tf)
		if want := []string{"../../" + alertsFile}; !slices.Equal(tf.RuleFiles, want) {
			t.Errorf("%s: rule_files = %v, want %v", f, tf.RuleFiles, want)
		}
		for _, tc := range tf.Tests {
			for _, c := range tc.Cases {
				if !slices.Contains(names, c.Alert) {
					t.Errorf("%s: test %q names alert %s, which %s does not have", f, tc.Name, c.Alert, alertsFile)
				}
				if len(c.ExpAlerts) > 0 {
					fires[c.Alert] = true
				} else {
					silent[c.Alert] = true
				}
			}
		}
	}
	for _, a := range names {
		if !fires[a] {
			t.Errorf("alert %s has no promtool case in %s where it fires", a, alertTestsDir)
		}
		if !silent[a] {
			t.Errorf("alert %s has no promtool case in %s where it stays silent", a, alertTestsDir)
		}
	}
}

// TestAlertsRunbooks: every alert has a severity, a summary, a description
// and a runbook_url whose section exists in runbooks.md, and every runbook
// section is an alert.
func TestAlertsRunbooks(t *testing.T) {
	b, err := os.ReadFile(runbooksFile)
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^### (Nodeagent\w+)$`).FindAllStringSubmatch(string(b), -1) {
		sections[m[1]] = true
	}
	seen := map[string]bool{}
	for _, g := range alertRules(t).Groups {
		if !strings.HasPrefix(g.Name, "nodeagent-") {
			t.Errorf("group %q: name it nodeagent-<feature>", g.Name)
		}
		for _, r := range g.Rules {
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if !strings.HasPrefix(r.Alert, "Nodeagent") {
				t.Errorf("alert %s: name it Nodeagent...", r.Alert)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, s)
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					t.Errorf("alert %s has no %s", r.Alert, a)
				}
			}
			if want := runbookBase + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("alert %s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !sections[r.Alert] {
				t.Errorf("alert %s has no section \"### %s\" in deploy/%s", r.Alert, r.Alert, runbooksFile)
			}
		}
	}
	for s := range sections {
		if !seen[s] {
			t.Errorf("deploy/%s has a section for %s, which is not an alert", runbooksFile, s)
		}
	}
}

// renderedGroups renders the chart's PrometheusRule and returns its groups.
func renderedGroups(t *testing.T, args ...string) []any {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", releaseName, chartDir, "--namespace", releaseNS,
		"--set", "prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	groups, _ := dig(objectsByKind(t, out)["PrometheusRule"], "spec", "groups").([]any)
	return groups
}

// TestPrometheusRuleIsAlertsFile: the chart's PrometheusRule with default
// values carries exactly the groups of the plain rules file, and its values
// change what they say they change.
func TestPrometheusRuleIsAlertsFile(t *testing.T) {
	var want struct {
		Groups []any `yaml:"groups"`
	}
	readYAML(t, alertsFile, &want)
	if got := renderedGroups(t); !reflect.DeepEqual(got, want.Groups) {
		t.Errorf("the PrometheusRule's groups differ from %s:\n got: %v\nwant: %v", alertsFile, got, want.Groups)
	}

	rules := map[string]map[string]any{}
	for _, g := range renderedGroups(t,
		"--set", "prometheusRule.disabledAlerts={NodeagentDown,NodeagentRestarting}",
		"--set", "prometheusRule.forDurations.NodeagentStartupTaintStuck=45m",
		"--set", "prometheusRule.additionalAlertLabels.team=platform",
		"--set", "prometheusRule.startupTaintKey=example.com/booting") {
		for _, r := range dig(g, "rules").([]any) {
			r := r.(map[string]any)
			rules[r["alert"].(string)] = r
		}
	}
	for _, a := range []string{"NodeagentDown", "NodeagentRestarting"} {
		if _, ok := rules[a]; ok {
			t.Errorf("%s rendered although in disabledAlerts", a)
		}
	}
	if got := len(rules); got != len(alertNames(t))-2 {
		t.Errorf("%d alerts rendered, want all but the 2 disabled", got)
	}
	stuck := rules["NodeagentStartupTaintStuck"]
	if stuck["for"] != "45m" {
		t.Errorf("NodeagentStartupTaintStuck for = %v, want 45m", stuck["for"])
	}
	if e := fmt.Sprint(stuck["expr"]); !strings.Contains(e, `key="example.com/booting"`) {
		t.Errorf("NodeagentStartupTaintStuck expr %q does not watch startupTaintKey", e)
	}
	for name, r := range rules {
		if l := dig(r, "labels", "team"); l != "platform" {
			t.Errorf("%s: additionalAlertLabels not applied: labels %v", name, r["labels"])
		}
		if dig(r, "labels", "severity") == nil {
			t.Errorf("%s: additionalAlertLabels replaced the severity: labels %v", name, r["labels"])
		}
	}
}
