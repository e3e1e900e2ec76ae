#!/usr/bin/env bash
# Deletes a TPU (and its queued resource). Checkpoints in the GCS workdir are kept.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALLOWED="project zone name provision dry-run"
SUMMARY="Delete the TPU NAME: the queued resource with --force (--provision=qr, default) or the TPU
VM (--provision=vm). The GCS workdir is not touched."
parse_args "$@"
require_tpu

tpu_delete
