#!/usr/bin/env bash
# Installs the hybrid_ir package, with the [tpu] extra, on every worker of an existing TPU.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALLOWED="project zone name python git-url git-ref data dry-run"
SUMMARY="Install hybrid_ir on every worker: copies this checkout's HEAD (git archive) or clones
--git-url, then 'pip install -e .[tpu]' into ~/hybrid_ir/.venv. Re-run after code changes."
parse_args "$@"
require_tpu

install_package
stage_data
log "installed on all workers of ${TPU_NAME}; next: launch/train.sh"
