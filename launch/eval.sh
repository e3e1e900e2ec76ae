#!/usr/bin/env bash
# Runs the eval binary against a workdir: here (CPU is fine) or on a separate single-host TPU.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALLOWED="on config workdir once project zone name accelerator-type runtime-version provision python
git-url git-ref data keep dry-run --"
SUMMARY="Run 'python -m hybrid_ir.eval --config CONFIG --workdir WORKDIR [--once] [ARGS]', which
evaluates the workdir's checkpoints while training writes them (or the latest one with --once).
--on=local runs it here with the python on PATH (PYTHON to override; needs hybrid_ir installed and
GCS credentials). --on=tpu creates a separate single-host TPU VM named NAME-eval, installs, runs
the eval on it and deletes it at the end, on failure or on Ctrl-C (unless --keep).
--project/--zone are needed only for --on=tpu."
parse_args "$@"
require_workdir any
require_config
eval_args=()
if ((ONCE)); then eval_args=(--once); fi

case "$EVAL_ON" in
  local)
    cd "$REPO_ROOT"
    run "${PYTHON:-python3}" -m hybrid_ir.eval --config "$CONFIG" --workdir "$WORKDIR" \
      ${eval_args[@]+"${eval_args[@]}"} ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}
    ;;
  tpu)
    TPU_NAME="${TPU_NAME}-eval"
    require_tpu
    require_workdir gs
    tpu_create
    arm_teardown
    tpu_wait_active
    install_package
    stage_data
    tpu_ssh 0 "set -o pipefail; cd ${REMOTE_DIR} && $(python_command hybrid_ir.eval \
${eval_args[@]+"${eval_args[@]}"}) 2>&1 | tee -a eval.log"
    disarm_teardown
    if ((KEEP)); then log "TPU ${TPU_NAME} left running"; else tpu_delete; fi
    ;;
  *) die "--on='${EVAL_ON}' must be 'local' or 'tpu'" ;;
esac
