#!/usr/bin/env bash
# Runs hybrid_ir.train on all workers of an existing TPU, with the installed package.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALLOWED="project zone name config workdir detach dry-run --"
SUMMARY="Run 'python -m hybrid_ir.train --config CONFIG --workdir WORKDIR [ARGS]' on all workers at
once (jax.distributed joins them on a pod slice). Streams the output unless --detach. Does not
delete the TPU (see run_all.sh for that). Example:
  launch/train.sh --project=p --zone=z --workdir=gs://b/runs/x -- --config.total_steps=1000"
parse_args "$@"
require_tpu
require_workdir gs
require_config

train_on_workers
