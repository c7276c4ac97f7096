// Package imagewarm is the agent's image pre-pull feature: it pulls the
// configured images into containerd's k8s.io namespace and the CRI's
// snapshotter, in parallel, leaving exactly the image records and snapshots
// that CRI's own PullImage leaves, so kubelet finds them "already present on
// machine" (by tag and by digest). Required images gate the node's startup
// taint; a periodic re-check pulls again what image GC removed.
//
// The work lives in named files: config.go (the section), cri.go (what the
// CRI runtime status says about snapshotter and registry config), pull.go
// (one pull, with progress), records.go (the CRI image records), hosts.go
// and creds.go (registry hosts and credentials), status.go (per-image
// state), metrics.go. S3 mounts (issue 13) will sit beside them.
package imagewarm
