// Package raid turns a node's instance-store NVMe disks into scratch space
// for Spark: it finds the disks through sysfs (by model, serial prefix or an
// explicit list), decides from what is on them (never from a marker file)
// whether to create a RAID0 array, assemble the one it made before, adopt an
// array the AMI made, format a single disk, or touch nothing and say why;
// then it runs mdadm and mkfs through the agent's exec runner, mounts the
// result in the host's mount namespace, makes the configured subdirectories,
// and reports it: Ready (for the startup-taint gate), a Node label, Events,
// metrics and `nodeagent raid status`.
//
// The decision is one pure function (Decide) over what discovery read
// (Discover); the commands it leads to are built by small pure functions
// (mdadm.go) and run by Ensure. Cancelling Run leaves the array and the mount
// in place: pods use them.
package raid
