#!/usr/bin/env bash
# Creates a Cloud TPU (single host or pod slice) and waits until it is ready.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALLOWED="project zone name accelerator-type runtime-version provision dry-run"
SUMMARY="Create a Cloud TPU VM or pod slice and wait until it is ready. If waiting fails, the TPU is
deleted again. Example:
  launch/create.sh --project=my-proj --zone=us-central2-b --accelerator-type=v4-32 --dry-run"
parse_args "$@"
require_tpu

tpu_create
arm_teardown
tpu_wait_active
disarm_teardown
log "TPU ${TPU_NAME} is ready; next: launch/install.sh"
