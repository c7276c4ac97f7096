#!/usr/bin/env bash
# prereqs.sh installs what the interrupt tests and benchmark use; idempotent:
#   - amazon-ec2-metadata-mock v1.13.0 (the real IMDS mock) into
#     $NODEAGENT_CACHE/bin (default ~/.cache/nodeagent/bin), only when missing;
#   - Debian containerd and runc for the root tests against a real containerd.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../.ci/lib.sh"

AEMM_VERSION=v1.13.0

apt_install containerd runc
phase "interrupt apt packages"
mock=$(go_tool ec2-metadata-mock "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@${AEMM_VERSION}")
phase "ec2-metadata-mock ${AEMM_VERSION}"
echo "prereqs: ec2-metadata-mock at ${mock}"
