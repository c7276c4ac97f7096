package deploy

import (
	"strings"
	"testing"
)

// TestValuesSchema: helm validates the values against values.schema.json, so
// a bad value fails `helm template` (and install, upgrade, lint) naming its
// path, before anything reaches the cluster.
func TestValuesSchema(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string // in helm's error
	}{
		{[]string{"--set", "imagee.tag=v1"}, "additional properties 'imagee' not allowed"},
		{[]string{"--set", "metrics.port=0"}, "/metrics/port"},
		{[]string{"--set", "metrics.port=70000"}, "/metrics/port"},
		{[]string{"--set-string", "metrics.port=9910"}, "/metrics/port"},
		{[]string{"--set", "logLevel=verbose"}, "/logLevel"},
		{[]string{"--set", "logFormat=xml"}, "/logFormat"},
		{[]string{"--set", "image.pullPolicy=Sometimes"}, "/image/pullPolicy"},
		{[]string{"--set", "image.digest=sha256:abc"}, "/image/digest"},
		{[]string{"--set", "updateStrategy.maxSurge=-1"}, "/updateStrategy/maxSurge"},
		{[]string{"--set", "updateStrategy.maxSurge=one"}, "/updateStrategy/maxSurge"},
		{[]string{"--set", "keepPrivileges={dns}"}, "/keepPrivileges/0"},
		{[]string{"--set", "tolerateAllTaints=maybe"}, "/tolerateAllTaints"},
		{[]string{"--set", "readinessProbe.httpGet.port=1"}, "/readinessProbe"},
		{[]string{"--set", "terminationGracePeriodSeconds=0"}, "/terminationGracePeriodSeconds"},
		{[]string{"--set", "prometheusRule.forDurations.NodeagentFeatureDown=10 minutes"}, "/prometheusRule/forDurations/NodeagentFeatureDown"},
		{[]string{"--set", "prometheusRule.forDurations.FeatureDown=10m"}, "invalid propertyName 'FeatureDown'"},
		{[]string{"--set", "prometheusRule.disabledAlerts={featureDown}"}, "/prometheusRule/disabledAlerts/0"},
		{[]string{"--set", "dashboard.enabled=yes"}, "/dashboard/enabled"},
		{[]string{"--set", "podLabels.team=1"}, "/podLabels/team"},
	} {
		_, err := runHelm(t, append([]string{"template", releaseName, chartDir}, tc.set...)...)
		if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("helm template %v: err = %v, want a schema error naming %q", tc.set, err, tc.want)
		}
	}
	// Good values still pass: percentages, a full digest, an unknown-free set.
	for _, set := range [][]string{
		{"--set", "updateStrategy.maxSurge=10%", "--set", "updateStrategy.maxUnavailable=0"},
		{"--set", "image.digest=sha256:" + strings.Repeat("0f", 32)},
		{"--set", "keepPrivileges={dnscache}", "--set", "logLevel=debug", "--set", "metrics.port=19910"},
	} {
		if _, err := runHelm(t, append([]string{"template", releaseName, chartDir}, set...)...); err != nil {
			t.Errorf("helm template %v: %v", set, err)
		}
	}
}
