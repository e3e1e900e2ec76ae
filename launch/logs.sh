#!/usr/bin/env bash
# Streams the training log of one worker (or all) of a TPU.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALLOWED="project zone name worker dry-run"
SUMMARY="Follow ~/hybrid_ir/train.log on a worker (Ctrl-C stops following, not training).
Metrics also land in WORKDIR (TensorBoard: tensorboard --logdir=gs://...)."
parse_args "$@"
require_tpu

tpu_ssh "$WORKER" "tail -n 200 -F ${REMOTE_DIR}/train.log"
