// Package deploy holds what installs nodeagent on a cluster: the Helm chart
// (helm/nodeagent), the manifests rendered from it (manifests/) and the
// production Dockerfile. It exports the chart's default config so that the
// binary runs on exactly the config the ConfigMap ships.
package deploy

import _ "embed"

// DefaultConfig is helm/nodeagent/files/config.yaml: the full default
// config, every key commented with its default.
//
//go:embed helm/nodeagent/files/config.yaml
var DefaultConfig []byte
