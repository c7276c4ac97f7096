package cluster

import (
	"reflect"
	"testing"
)

func TestSplitRule(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"plain", "-A FORWARD -j NODEAGENT-E2E", []string{"-A", "FORWARD", "-j", "NODEAGENT-E2E"}},
		{"quoted comment", `-A INPUT -m comment --comment "kubernetes firewall" -j KUBE-FIREWALL`,
			[]string{"-A", "INPUT", "-m", "comment", "--comment", "kubernetes firewall", "-j", "KUBE-FIREWALL"}},
		{"escaped quote", `-A X -m comment --comment "a \"b\"" -j Y`,
			[]string{"-A", "X", "-m", "comment", "--comment", `a "b"`, "-j", "Y"}},
		{"negation", "-A G -s 10.0.0.0/24 ! -d 10.0.0.0/24 -j DROP",
			[]string{"-A", "G", "-s", "10.0.0.0/24", "!", "-d", "10.0.0.0/24", "-j", "DROP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := splitRule(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("splitRule(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/a":              "/tmp/a",
		`/tmp/with\040space`:  "/tmp/with space",
		`/tmp/tab\011and\134`: "/tmp/tab\tand\\",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
