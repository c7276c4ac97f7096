// Package interrupt decommissions the node's Spark executors, each exactly
// once, as soon as the node is told it will go away.
//
// It polls the instance metadata service (IMDSv2, aws-sdk-go-v2
// feature/ec2/imds) every second for the spot interruption notice, the
// rebalance recommendation, scheduled maintenance and the Auto Scaling
// lifecycle state, and watches the own Node for the taints Karpenter and
// aws-node-termination-handler put on it. A notice's policy (per kind)
// ignores it, taints the Node, or decommissions: the Node gets the
// nodeagent.io/interruption=<kind>:NoSchedule taint and an Event, and every
// executor pod on it (spark-role=executor; drivers are never touched) is
// told, either by the configured signal (SIGPWR, Spark's
// spark.executor.decommission.signal) to its container's main process
// through containerd's task API, or by the Eviction API. Who was told is
// remembered on the Node (annotation nodeagent.io/interruption-state) before
// the signal goes, so that a restarted agent never signals a container
// twice: a second SIGPWR kills a decommissioning executor. While a
// signalled executor migrates its blocks, a PodDisruptionBudget of its own
// keeps a drain from evicting it (whose preStop hook would signal it again).
//
// It also exports the node's EC2 facts (instance type, lifecycle, zone, AMI)
// as an info metric, for pricing Spark jobs in PromQL.
package interrupt
