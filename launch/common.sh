# shellcheck shell=bash
# shellcheck disable=SC2034  # the flags set here are read by the scripts that source this file
# Shared functions for the Cloud TPU launch scripts in this folder. Sourced, never run.
#
# Every gcloud call goes through `run`, which prints the command as `+ <shell-quoted words>` (the
# quoting is Python's shlex.quote, so a printed line can be pasted into a shell or parsed with
# shlex.split) and executes it unless --dry-run was given. Everything is validated before the first
# command runs, and once a TPU has been created by this script an EXIT trap deletes it again if any
# later step fails (see `arm_teardown`).

# Written for bash >= 3.2 (macOS): no associative arrays, no mapfile, guarded empty arrays.

LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${LAUNCH_DIR}/.." && pwd)"
# Relative to the login user's home on every worker (ssh commands start there), so no `~` quoting.
REMOTE_DIR="hybrid_ir"

# Parameters: flags override these environment variables, which override the defaults.
PROJECT_ID="${PROJECT_ID:-}"
ZONE="${ZONE:-}"
TPU_NAME="${TPU_NAME:-hybrid-ir}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
PROVISION="${PROVISION:-qr}"
WORKDIR="${WORKDIR:-}"
CONFIG="${CONFIG:-configs/paper/xlmr_hybrid.py}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
GIT_URL="${GIT_URL:-}"
GIT_REF="${GIT_REF:-main}"
DATA_URL="${DATA_URL:-}"
WORKER="${WORKER:-0}"
GCLOUD="${GCLOUD:-gcloud}"
POLL_SECONDS="${POLL_SECONDS:-30}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-7200}"
DRY_RUN=0
DETACH=0
KEEP=0
ONCE=0
EVAL_ON="local"
PASSTHROUGH=()  # arguments after `--`, handed to the Python binary unchanged
ALLOWED=""  # set by each script after sourcing: the flag names it accepts
SUMMARY=""  # set by each script: the description shown by --help

die() {
  echo "ERROR: $*" >&2
  exit 2
}

log() {
  echo "[$(basename "$0")$( ((DRY_RUN)) && echo ', dry run')] $*" >&2
}

# quote WORD: prints WORD quoted exactly like Python's shlex.quote.
quote() {
  local s="$1" q="'\"'\"'"
  if [[ -z "$s" ]]; then
    printf "''"
  elif [[ "$s" =~ ^[abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/$q}"
  fi
}

# join_quoted WORD...: the words quoted and joined by spaces (shlex.join).
join_quoted() {
  local out="" w
  for w in "$@"; do
    out+="${out:+ }$(quote "$w")"
  done
  printf '%s' "$out"
}

# run CMD...: prints `+ CMD` (stdout under --dry-run, else stderr) and runs CMD unless --dry-run.
run() {
  if ((DRY_RUN)); then
    echo "+ $(join_quoted "$@")"
    return 0
  fi
  echo "+ $(join_quoted "$@")" >&2
  "$@"
}

# parse_args ARGS...: sets the parameters above from flags. The calling script sets ALLOWED, the
# space-separated flag names it accepts ("--" if it passes arguments on to Python), and SUMMARY.
parse_args() {
  local allowed=" ${ALLOWED//$'\n'/ } " flag name value
  while (($#)); do
    flag="$1"
    shift
    case "$flag" in
      -h|--help) usage; exit 0 ;;
      --)
        [[ "$allowed" == *" -- "* ]] || die "$(basename "$0") takes no arguments after --"
        PASSTHROUGH=("$@")
        break ;;
      --*) ;;
      *) die "unexpected argument '${flag}' (flags are --name=value; arguments for the Python binary go after --)" ;;
    esac
    name="${flag#--}"
    name="${name%%=*}"
    [[ "$allowed" == *" ${name} "* ]] || die "unknown flag '--${name}' for $(basename "$0") (see --help)"
    case "$name" in
      dry-run|detach|keep|once)  # switches take no value
        [[ "$flag" != *=* ]] || die "flag --${name} takes no value, got '${flag}'"
        value=1 ;;
      *)
        if [[ "$flag" == *=* ]]; then
          value="${flag#*=}"
        else
          (($#)) || die "flag --${name} needs a value"
          value="$1"
          shift
        fi ;;
    esac
    case "$name" in
      project) PROJECT_ID="$value" ;;
      zone) ZONE="$value" ;;
      name) TPU_NAME="$value" ;;
      accelerator-type) ACCELERATOR_TYPE="$value" ;;
      runtime-version) RUNTIME_VERSION="$value" ;;
      provision) PROVISION="$value" ;;
      workdir) WORKDIR="$value" ;;
      config) CONFIG="$value" ;;
      python) PYTHON_VERSION="$value" ;;
      git-url) GIT_URL="$value" ;;
      git-ref) GIT_REF="$value" ;;
      data) DATA_URL="$value" ;;
      worker) WORKER="$value" ;;
      on) EVAL_ON="$value" ;;
      dry-run) DRY_RUN=1 ;;
      detach) DETACH=1 ;;
      keep) KEEP=1 ;;
      once) ONCE=1 ;;
      *) die "internal: flag --${name} is allowed but not handled" ;;
    esac
  done
  if [[ -n "$DATA_URL" && "$DATA_URL" != gs://?* ]]; then
    die "--data='${DATA_URL}' must be a gs:// folder"
  fi
  if [[ -z "$RUNTIME_VERSION" ]]; then
    RUNTIME_VERSION="$(default_runtime_version "$ACCELERATOR_TYPE")"
  fi
}

# usage: the --help text, built from SUMMARY and the flags in ALLOWED.
usage() {
  local name
  printf 'Usage: launch/%s [flags]%s\n\n%s\n\nFlags (--name=value or --name value; the\n' \
    "$(basename "$0")" "$([[ " ${ALLOWED} " == *" -- "* ]] && echo ' [-- ARGS for python]')" "$SUMMARY"
  printf 'environment variable in brackets is read when the flag is not given):\n'
  for name in $ALLOWED; do
    case "$name" in
      project) echo "  --project=ID            GCP project [PROJECT_ID]; required" ;;
      zone) echo "  --zone=ZONE             e.g. us-central2-b (v4), us-west4-a (v5e) [ZONE]; required" ;;
      name) echo "  --name=NAME             TPU and queued-resource name [TPU_NAME]; default hybrid-ir" ;;
      accelerator-type) echo "  --accelerator-type=T    v4-8 (single host), v4-32 (pod slice), v5litepod-16, ...
                          [ACCELERATOR_TYPE]; default v4-8" ;;
      runtime-version) echo "  --runtime-version=V     TPU VM image [RUNTIME_VERSION]; default by generation:
                          tpu-ubuntu2204-base (v4), v2-alpha-tpuv5-lite (v5e),
                          v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e)" ;;
      provision) echo "  --provision=qr|vm       qr: queued resource (any size; recommended), vm: tpu-vm
                          create (single host) [PROVISION]; default qr. Use the same
                          value for create and delete." ;;
      workdir) echo "  --workdir=gs://B/DIR    checkpoints + metrics, shared by train and eval [WORKDIR]" ;;
      config) echo "  --config=PATH[:ARG]     config file in the repo [CONFIG];
                          default configs/paper/xlmr_hybrid.py" ;;
      python) echo "  --python=VERSION        Python for the workers' venv [PYTHON_VERSION]; default 3.11" ;;
      git-url) echo "  --git-url=URL           git clone URL on the workers instead of copying this
                          checkout's HEAD [GIT_URL]" ;;
      git-ref) echo "  --git-ref=REF           branch or tag for --git-url [GIT_REF]; default main" ;;
      data) echo "  --data=gs://B/DIR       copied (rsync) to ~/shared/data on every worker, where
                          configs/common.py looks for data by default [DATA_URL]" ;;
      worker) echo "  --worker=N|all          which worker's log [WORKER]; default 0" ;;
      on) echo "  --on=local|tpu          local: this machine (CPU is fine); tpu: a separate
                          single-host TPU VM named NAME-eval; default local" ;;
      dry-run) echo "  --dry-run               print the commands ('+ ...', shell-quoted), run nothing" ;;
      detach) echo "  --detach                start training in the background on the workers and
                          return; follow with logs.sh, tear down with delete.sh" ;;
      keep) echo "  --keep                  do not delete the TPU after success" ;;
      once) echo "  --once                  evaluate the latest checkpoint once, then exit" ;;
      --) echo "  -- ARGS                 passed unchanged to python, e.g. --config.input.batch_size=100" ;;
    esac
  done
  printf '\nAlso read: GCLOUD (gcloud binary; default gcloud), POLL_SECONDS (30) and WAIT_TIMEOUT\n'
  printf '(7200) for queued resources, TMPDIR (where the repo archive is written).\n'
}

# default_runtime_version ACCELERATOR_TYPE: the base TPU VM image recommended for JAX on that
# generation (cloud.google.com/tpu/docs/runtimes); JAX itself comes from pip.
default_runtime_version() {
  case "$1" in
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v5litepod-*|v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    *) echo "tpu-ubuntu2204-base" ;;
  esac
}

# Checks, all run before anything is created.
require_gcloud() {
  ((DRY_RUN)) && return 0
  command -v "$GCLOUD" >/dev/null 2>&1 || die "'${GCLOUD}' not found on PATH. Install the Google \
Cloud CLI (https://cloud.google.com/sdk/docs/install), or set GCLOUD to its path, or use --dry-run."
}

require_project_zone() {
  [[ -n "$PROJECT_ID" ]] || die "no project: pass --project=PROJECT_ID or set PROJECT_ID"
  [[ -n "$ZONE" ]] || die "no zone: pass --zone=ZONE (e.g. us-central2-b) or set ZONE"
}

require_tpu() {
  require_project_zone
  [[ "$TPU_NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
    || die "--name='${TPU_NAME}' is not a valid TPU name (lowercase letters, digits, '-')"
  case "$PROVISION" in
    qr|vm) ;;
    *) die "--provision='${PROVISION}' must be 'qr' (queued resource) or 'vm' (tpu-vm create)" ;;
  esac
  require_gcloud
}

# require_workdir gs|any: the workdir; TPU workers need a GCS path all hosts and the eval job share.
require_workdir() {
  [[ -n "$WORKDIR" ]] || die "no workdir: pass --workdir=gs://BUCKET/PATH or set WORKDIR"
  if [[ "$1" == gs && "$WORKDIR" != gs://?* ]]; then
    die "--workdir='${WORKDIR}' must be a gs:// path: TPU workers are separate machines and are \
deleted at the end, so checkpoints must live in GCS"
  fi
}

require_config() {
  [[ -n "$CONFIG" ]] || die "no config: pass --config=configs/<name>.py[:arg]"
  local path="${CONFIG%%:*}"
  [[ -f "${REPO_ROOT}/${path}" ]] || log "warning: config '${path}' is not in ${REPO_ROOT} (yet)"
}

# gcloud TPU commands.
tpu_create() {
  if [[ "$PROVISION" == vm ]]; then
    run "$GCLOUD" compute tpus tpu-vm create "$TPU_NAME" "--zone=${ZONE}" "--project=${PROJECT_ID}" \
      "--accelerator-type=${ACCELERATOR_TYPE}" "--version=${RUNTIME_VERSION}"
  else
    run "$GCLOUD" compute tpus queued-resources create "$TPU_NAME" "--zone=${ZONE}" \
      "--project=${PROJECT_ID}" "--node-id=${TPU_NAME}" "--accelerator-type=${ACCELERATOR_TYPE}" \
      "--runtime-version=${RUNTIME_VERSION}"
  fi
}

# tpu_wait_active: a queued resource is only a request; poll until its TPU is ACTIVE.
tpu_wait_active() {
  [[ "$PROVISION" == qr ]] || return 0
  local describe=("$GCLOUD" compute tpus queued-resources describe "$TPU_NAME" "--zone=${ZONE}"
    "--project=${PROJECT_ID}" "--format=value(state.state)")
  if ((DRY_RUN)); then
    echo "# repeat every ${POLL_SECONDS}s until the state is ACTIVE (at most ${WAIT_TIMEOUT}s):"
    run "${describe[@]}"
    return 0
  fi
  local start="$SECONDS" state
  while true; do
    # A failed describe (e.g. a network blip) is retried until the timeout, not fatal.
    state="$(run "${describe[@]}")" || state="<describe failed>"
    log "queued resource ${TPU_NAME}: ${state:-<no state>}"
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED|SUSPENDING|DELETING) die "queued resource ${TPU_NAME} is ${state}" ;;
    esac
    ((SECONDS - start < WAIT_TIMEOUT)) \
      || die "queued resource ${TPU_NAME} not ACTIVE after ${WAIT_TIMEOUT}s (last state: ${state})"
    sleep "$POLL_SECONDS"
  done
}

# set_delete_command: DELETE_COMMAND=(the gcloud command that deletes this TPU).
set_delete_command() {
  if [[ "$PROVISION" == vm ]]; then
    DELETE_COMMAND=("$GCLOUD" compute tpus tpu-vm delete "$TPU_NAME" "--zone=${ZONE}"
      "--project=${PROJECT_ID}" --quiet)
  else
    # --force deletes the queued resource's TPU node first.
    DELETE_COMMAND=("$GCLOUD" compute tpus queued-resources delete "$TPU_NAME" "--zone=${ZONE}"
      "--project=${PROJECT_ID}" --force --quiet)
  fi
}

tpu_delete() {
  set_delete_command
  run "${DELETE_COMMAND[@]}"
}

# tpu_ssh WORKER COMMAND: runs the shell COMMAND on one worker, or on all of them in parallel.
tpu_ssh() {
  run "$GCLOUD" compute tpus tpu-vm ssh "$TPU_NAME" "--zone=${ZONE}" "--project=${PROJECT_ID}" \
    "--worker=$1" "--command=$2"
}

# arm_teardown: from now on, any failure (or Ctrl-C) deletes the TPU this script created.
# Called only after create succeeded, so a name clash never deletes somebody else's TPU.
TEARDOWN_ARMED=0
arm_teardown() {
  TEARDOWN_ARMED=1
  if ((DRY_RUN)); then
    set_delete_command
    echo "# if a later step fails, the script deletes the TPU: $(join_quoted "${DELETE_COMMAND[@]}")"
  fi
  trap on_exit EXIT
  trap 'exit 130' INT TERM
}

disarm_teardown() {
  TEARDOWN_ARMED=0
}

on_exit() {
  local status=$?
  if ((status != 0 && TEARDOWN_ARMED)); then
    TEARDOWN_ARMED=0
    log "a step failed (exit ${status}); deleting TPU ${TPU_NAME} so it does not keep running"
    tpu_delete || log "DELETE FAILED: check 'gcloud compute tpus queued-resources list' and \
'gcloud compute tpus tpu-vm list' in ${ZONE} and delete ${TPU_NAME} by hand"
  fi
  exit "$status"
}

# install_package: puts the repo on every worker and installs it with the [tpu] extra into a
# Python ${PYTHON_VERSION} virtualenv (TPU images ship Python 3.10; the package needs >= 3.11,
# so uv fetches a managed interpreter).
install_package() {
  local fetch
  if [[ -n "$GIT_URL" ]]; then
    fetch="rm -rf ${REMOTE_DIR} && git clone --depth=1 --branch=$(quote "$GIT_REF") \
$(quote "$GIT_URL") ${REMOTE_DIR}"
  else
    local archive="${TMPDIR:-/tmp}/hybrid_ir-${TPU_NAME}.tar.gz"
    if [[ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
      log "warning: uncommitted changes in ${REPO_ROOT} are NOT shipped (git archive HEAD)"
    fi
    run git -C "$REPO_ROOT" archive --format=tar.gz "--output=${archive}" HEAD
    run "$GCLOUD" compute tpus tpu-vm scp "$archive" "${TPU_NAME}:${REMOTE_DIR}.tar.gz" \
      "--zone=${ZONE}" "--project=${PROJECT_ID}" --worker=all
    fetch="rm -rf ${REMOTE_DIR} && mkdir ${REMOTE_DIR} && tar -xzf ${REMOTE_DIR}.tar.gz -C ${REMOTE_DIR}"
  fi
  tpu_ssh all "set -e; ${fetch} && cd ${REMOTE_DIR} && python3 -m pip install --user --quiet uv \
&& python3 -m uv venv --python=$(quote "$PYTHON_VERSION") .venv \
&& python3 -m uv pip install --python=.venv/bin/python -e '.[tpu]'"
}

# stage_data: the data folder in GCS -> ~/shared/data on every worker: the default DATA_DIR of
# configs/common.py (../shared/data next to the checkout), so configs need no path overrides.
stage_data() {
  [[ -n "$DATA_URL" ]] || return 0
  tpu_ssh all "mkdir -p shared/data && gcloud storage rsync --recursive $(quote "$DATA_URL") shared/data"
}

# python_command MODULE EXTRA_ARGS...: the remote command line (run inside ${REMOTE_DIR}) for a
# hybrid_ir binary with --config/--workdir and the pass-through arguments, quoted for the shell.
python_command() {
  local module="$1"
  shift
  printf '.venv/bin/python -m %s %s' "$module" \
    "$(join_quoted --config "$CONFIG" --workdir "$WORKDIR" "$@" ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"})"
}

# train_on_workers: hybrid_ir.train on every worker at once; on a pod slice each process joins
# the others through jax.distributed's TPU auto-detection. Output is appended to
# ${REMOTE_DIR}/train.log on each worker (logs.sh follows it).
train_on_workers() {
  local cmd
  cmd="$(python_command hybrid_ir.train)"
  if ((DETACH)); then
    # setsid + nohup: training outlives the ssh session.
    tpu_ssh all "cd ${REMOTE_DIR} && setsid nohup ${cmd} >> train.log 2>&1 < /dev/null &"
  else
    tpu_ssh all "set -o pipefail; cd ${REMOTE_DIR} && ${cmd} 2>&1 | tee -a train.log"
  fi
}
