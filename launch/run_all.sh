#!/usr/bin/env bash
# One training run end to end: create the TPU, install, train on all workers, delete the TPU.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALLOWED="project zone name accelerator-type runtime-version provision workdir config python git-url
git-ref data detach keep dry-run --"
SUMMARY="Create a TPU, install hybrid_ir on every worker, run hybrid_ir.train on all of them, then
delete the TPU (unless --keep or --detach). If any step after create fails, or on Ctrl-C, the TPU is
deleted; checkpoints in the gs:// workdir survive, and re-running resumes from them. Example:
  launch/run_all.sh --project=p --zone=us-central2-b --accelerator-type=v4-32 \\
    --workdir=gs://b/runs/xlmr_hybrid -- --config.input.batch_size=128"
parse_args "$@"
require_tpu
require_workdir gs
require_config

tpu_create
arm_teardown
tpu_wait_active
install_package
stage_data
train_on_workers
disarm_teardown
if ((DETACH || KEEP)); then
  log "TPU ${TPU_NAME} left running; logs: launch/logs.sh, tear down: launch/delete.sh"
else
  tpu_delete
fi
