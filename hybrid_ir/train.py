"""Trains a dual encoder on hybrid batches: `python -m hybrid_ir.train --config <file>[:arg] --workdir <dir>`.

Reads top to bottom as the method: mesh -> hybrid-batch pipeline -> encoder + AdamW -> a jitted,
sharded update step whose InfoNCE uses the *global* batch (plus every device's hard negatives) ->
Orbax checkpoints with the pipeline state, auto-resumed from the workdir.

Config keys read here (besides `model`, `mesh`, `input`, `evals`, owned by their modules):
  seed, total_steps, log_every, eval_every (0: off), train_evals (names of `evals` run every
        eval_every steps; default all), peak_flops (per device, for MFU; optional),
  optimizer: lr, weight_decay, b1, b2, eps, warmup_steps, decay ('cosine'|'linear'|'constant'),
             grad_clip (global norm; 0: off), embedding_update ('dense'|'lazy'|'frozen': how the
             token-embedding table is trained; hybrid_ir.table_update; default dense)
  loss: variant ('standard'|'paper'), temperature, learn_temperature, temperature_lr (its own
        peak learning rate; 0: optimizer.lr), symmetric,
        mask_false_negatives (mask in-batch positives and hard negatives that share a passage
        identity with a query's positive; the sampler already avoids them, see losses.info_nce),
        distill (optional: {weight, only, teacher, pivot}, the multilingual distillation term;
        hybrid_ir.distill)
  grad_cache_chunks: 0/1 = off; n > 1 = GradCache: embed in n chunks without activations kept,
        then back-propagate chunk by chunk (same gradients, ~1/n of the activation memory).
  input.packing: pack training texts several to a row (`train_step.training_tokenizer`).
  checkpoint: every, keep, async_save
  max_param_norm_growth: a step whose parameter norm exceeds this times the initial one is a
        divergence, treated like NaN (see Faults; optional, default 100; 0: no bound)
  selection: {metric, mode} (optional): model selection on a metric of train_evals (e.g.
        'validation/loss', 'min'): every evaluated step is evaluated first, then saved with its
        metrics, and the checkpoint manager keeps the best step by it besides the latest
        `checkpoint.keep` (checkpoint.make_manager(keep_best=...)).
Optional keys (peak_flops, max_param_norm_growth, selection, loss.distill, b1, b2, eps) are not
in every shipped config, whose keys are locked: add them to the config file rather than as
--config overrides.
Outputs in the workdir (hybrid_ir.run_dir): checkpoints/, metrics.jsonl, tensorboard/,
train.INFO (the log), lease.json while a trainer runs (one trainer per workdir), and
finished.json once the run is complete (process 0 only). The console (stderr) shows where they
go, the resume point, a progress bar (a line per log step when stderr is no terminal: loss per
batch type, s/step, ETA) and the end; everything else goes to the log file.
Several processes (a pod, or processes on one machine): jax.distributed is initialised from
--coordinator_address/--num_processes/--process_id or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/
JAX_PROCESS_ID, or detected by JAX itself on TPU pods and SLURM.

Faults (docs/faults.md):
  SIGTERM (TPU preemption) or a first Ctrl-C -> save a checkpoint, say so once it is final, exit 0;
    an in-training evaluation is abandoned at once.
  Another trainer on the workdir -> refused before anything is touched (run_dir.Lease).
  Resume: the newest checkpoint that restores and passes its checksums; damaged newer ones are
    named and moved to <workdir>/corrupt_checkpoints/. The config must equal the one saved with
    it, except checkpoint.RESUME_SAFE_KEYS and the keys --allow_config_change=k1,k2 names.
  NaN/Inf, or parameters blowing up (norm above max_param_norm_growth, default 100, times the
    initial one): every step's update computes an `ok` flag on device; the flags are read
    whenever metrics come to the host (log steps) and before every save, so no checkpoint holds
    a state from a step that was not ok; the run stops naming the first such step.
"""
import contextlib
import functools
import os
import sys
import time
from typing import Any

from absl import flags
from absl import logging
from etils import epath
import jax

from hybrid_ir import checkpoint as ckpt_lib
from hybrid_ir import config_flags
from hybrid_ir import distill
from hybrid_ir import hardware
from hybrid_ir import run_dir
from hybrid_ir import sharding
from hybrid_ir import train_step

# What the binary adds to `train` beyond (config, workdir), set by `main` only: a call from code
# (experiments, tests, notebooks) keeps the defaults. `main` calls `train(config, workdir)` like
# any other caller.
_BINARY = {"allow_config_change": (), "exits_after": False}
# How often a trainer renews its workdir lease; one silent for 4 of these is taken over.
LEASE_HEARTBEAT_SECONDS = 30.0


def define_flags() -> None:
  """The binary's flags; defined only when run as a program, so that other code (the experiment
  runner, notebooks) can import this module next to hybrid_ir.eval and call `train` directly."""
  config_flags.define_config()
  flags.DEFINE_string("workdir", None, "Output directory (checkpoints, metrics).")
  flags.DEFINE_list("allow_config_change", [],
                    "Config keys that may differ from the config saved in the checkpoint resumed "
                    "from (a key allows its sub-keys), e.g. optimizer.lr,total_steps; any other "
                    "difference is refused.")
  sharding.define_distributed_flags()


@contextlib.contextmanager
def _native_stderr_to(path: str | None):
  """While TensorFlow loads, its C++ code writes notes (oneDNN, CPU features) to file descriptor 2
  directly, past Python's logging: they go to the log file instead of the console."""
  if path is None:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with open(path, "ab") as log:
    os.dup2(log.fileno(), 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def main(argv) -> None:
  del argv
  config_flags.require("workdir")
  sharding.maybe_initialize_distributed(**sharding.distributed_args_from_flags())
  _BINARY.update(allow_config_change=tuple(flags.FLAGS.allow_config_change), exits_after=True)
  train(flags.FLAGS.config, flags.FLAGS.workdir)  # errors: one line (config_flags.run)


def _exit_now(code) -> None:
  """Ends the binary once `train` has returned: the checkpoint is final, the metrics and log
  flushed. Interpreter teardown after that only destroys TF/XLA objects (seconds) and can wait
  up to a minute on the tf.data iterator's autotuning thread, past a preemption's grace period;
  os._exit skips both (benchmarks/bench_sigterm.py)."""
  if isinstance(code, str):
    print(code, file=sys.stderr)
    code = 1
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()
  os._exit(code or 0)


def train(config, workdir: str | os.PathLike, *,
          allow_config_change: tuple[str, ...] | None = None) -> dict[str, Any]:
  """Runs (or resumes) training; returns the final state. See the module docstring.

  allow_config_change: config keys that may differ from the checkpoint's config on resume (the
  binary's --allow_config_change). Raises WorkdirError, CheckpointError, ConfigChangedError and
  FloatingPointError with messages that say what to do.
  """
  allow = tuple(_BINARY["allow_config_change"] if allow_config_change is None
                else allow_config_change)
  ckpt_lib.check_allowed_changes(allow)  # before anything in the workdir is touched
  # ----------------------------------------------------------------------------------------------
  # The workdir: one trainer at a time (process 0 holds the lease), then the log file.
  # ----------------------------------------------------------------------------------------------
  workdir = run_dir.check_workdir(workdir, create=True)  # local or gs://
  with run_dir.HeldLog() as log:
    sharding.maybe_initialize_distributed()
    lease = None
    if jax.process_index() == 0:
      lease = run_dir.Lease(workdir, heartbeat_seconds=LEASE_HEARTBEAT_SECONDS).acquire()
    log_path = log.to_file("train", workdir)
  try:
    return _train(config, workdir, allow, log_path, lease)
  finally:
    if lease is not None:
      lease.release()


def _train(config, workdir: epath.Path, allow: tuple[str, ...], log_path: str | None,
           lease: run_dir.Lease | None) -> dict[str, Any]:
  console = run_dir.Console(jax.process_index() == 0)
  hardware.log_memory("at start")  # the log's memory lines: benchmarks/bench_memory.py
  if lease is not None and lease.took_over:
    console.say(f"took over the stale lease of {lease.path} ({lease.took_over})")
  logging.info("config:\n%s", config)
  _check_config(config)
  config_json = ckpt_lib.config_to_json(config)
  total = int(config.total_steps)
  console.say(f"hybrid_ir.train: {workdir}\n  log:         {log_path or 'stderr'}\n"
              f"  checkpoints: {ckpt_lib.checkpoint_dir(workdir)}\n"
              f"  metrics:     {workdir / 'metrics.jsonl'} (TensorBoard: "
              f"{workdir / 'tensorboard'})")

  # ----------------------------------------------------------------------------------------------
  # Mesh.
  # ----------------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(config.get("mesh"))
  logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
               jax.process_count())

  # ----------------------------------------------------------------------------------------------
  # Resume policy: the config saved with the newest checkpoint must match (before the model loads).
  # ----------------------------------------------------------------------------------------------
  checked = _check_saved_config(workdir, config_json, allow, console)

  # ----------------------------------------------------------------------------------------------
  # Model.
  # ----------------------------------------------------------------------------------------------
  t0 = time.time()
  from hybrid_ir import models  # heavy import; keeps `--help` fast
  encoder = models.load_encoder(config.model)
  logging.info("encoder %s: %.1fM params, loaded in %.1fs", encoder.name,
               sum(x.size for x in jax.tree.leaves(encoder.params)) / 1e6, time.time() - t0)
  hardware.log_memory("model loaded")

  # ----------------------------------------------------------------------------------------------
  # Update step. A batch holds queries, their positive passages (and optional hard negatives) of
  # several languages, as the sampler drew its type (input.type_probs: X-X-mono, X-Y, or both:
  # hybrid). Every device embeds its rows with the shared encoder; the InfoNCE loss
  # (losses.info_nce) scores each query against every passage of the *global* batch and every
  # device's negatives, masking passages of the query's own passage identity. With
  # loss.distill, a term pulls each row's embeddings to a frozen teacher's embedding of the
  # group's pivot version (hybrid_ir.distill). AdamW updates the weights
  # (train_step.make_optimizer; the token table by hybrid_ir.table_update). One jit, state
  # donated, shardings pinned; `ok` flags a step whose state must never be saved.
  # ----------------------------------------------------------------------------------------------
  tokenize = train_step.training_tokenizer(encoder, config, mesh)
  step_fn = train_step.make_train_step(encoder, config, mesh)
  update = step_fn.update
  chunks = train_step.grad_cache_chunks(config)

  # ----------------------------------------------------------------------------------------------
  # Checkpoint load (auto-resume, falling back over damaged steps) and input pipeline.
  # ----------------------------------------------------------------------------------------------
  cc = config.checkpoint
  selection = config.get("selection")
  manager = ckpt_lib.make_manager(workdir, max_to_keep=cc.get("keep", 3),
                                  save_interval_steps=cc.get("every", 1000),
                                  async_save=cc.get("async_save", True),
                                  keep_best=selection.metric if selection else None,
                                  best_mode=selection.get("mode") if selection else None)
  with contextlib.ExitStack() as cleanup:  # closed in reverse, on any exit
    cleanup.callback(manager.close)
    state = step_fn.init(encoder.params)
    # The state holds the weights now; the encoder keeps only their shapes (no host copy).
    encoder.params = ckpt_lib.abstract(encoder.params)
    data_state = None
    restored = ckpt_lib.restore_latest(
        manager, ckpt_lib.abstract(state),
        on_bad=lambda s, why: console.say(f"checkpoint {s} is damaged; falling back: {why}"))
    if restored is not None:
      if restored.bad:
        _quarantine(workdir, manager, restored.bad, console)
      if restored.step != checked:
        ckpt_lib.check_resume_config(restored.config, config_json, allow,
                                         f"checkpoint {restored.step}")
      state, data_state = restored.state, restored.data
    start = int(state["step"])
    hardware.log_memory("state on device")
    if restored is None:
      console.say(f"starting at step 0 of {total}")
    elif start >= total:
      console.say(f"already finished: checkpoint {start} reaches total_steps={total}; "
                  "nothing to do")
      if jax.process_index() == 0 and run_dir.read_finished(workdir) is None:
        run_dir.write_finished(workdir, start)
      return state
    else:
      console.say(f"resumed from step {start} of {total}")
    with _native_stderr_to(log_path):
      from hybrid_ir import input_pipeline  # tensorflow: after jax has claimed the devices
    pipeline = input_pipeline.make_pipeline(config.input, tokenize, state=data_state)
    if restored is not None and jax.process_index() == 0:
      # Only now that the run is known to resume: a run extended with more steps is running again.
      run_dir.clear_finished(workdir)
    if not _BINARY["exits_after"]:
      # The binary exits at once instead (see _exit_now): closing waits on tf.data's threads.
      cleanup.callback(pipeline.close)
    hardware.log_memory("input pipeline")
    teacher_targets = None
    if distill.settings(config):  # the frozen teacher's embeddings, computed once per store
      student_dim = jax.eval_shape(encoder.apply, encoder.params,
                                   encoder.tokenize(["x"], "query")).shape[-1]
      teacher_targets = distill.teacher_targets(config, pipeline.sampler.sources,
                                                models.load_encoder, student_dim, say=console.say)
    writer = run_dir.MetricWriter(workdir, start, say=console.say)
    cleanup.callback(writer.close)
    saver = _Saver(workdir, manager, pipeline, config, lease, step_fn.max_param_norm)

    # --------------------------------------------------------------------------------------------
    # Evaluators (optional; the registry eval.py uses), built once for the whole run.
    # --------------------------------------------------------------------------------------------
    eval_every = int(config.get("eval_every", 0))
    evals = _train_evaluators(config, encoder) if eval_every else {}

    def run_evals(step) -> dict[str, float]:
      """Runs the evaluators; a stop request (preemption) abandons them at once. Returns the
      metrics of those that finished."""
      from hybrid_ir import evaluators
      ran, out = evaluators.run(evals, state["params"]), {}
      for name in evals:
        try:
          with stops.interruptible():
            _, _, results = next(ran)
        except run_dir.Interrupted:
          console.say(f"{stops.signal} during the {name} evaluation at step {step}: evaluation "
                      "abandoned")
          return out
        writer.write(step, results)
        out.update(results)
      return out

    # --------------------------------------------------------------------------------------------
    # Train loop.
    # --------------------------------------------------------------------------------------------
    log_every = int(config.get("log_every", 10))
    meter = train_step.StepMeter(config.get("peak_flops"))
    step = start
    console.start(start, total)
    cleanup.callback(console.close)
    with run_dir.StopRequests() as stops:
      for step in range(start + 1, total + 1):
        batch = distill.attach(next(pipeline), teacher_targets)
        if lease is not None:
          lease.check()  # never write after another trainer took the workdir over
        if batch["step"] != step - 1:
          raise RuntimeError(f"pipeline is at batch {batch['step']} but the model at step "
                             f"{step - 1}")
        gbatch = train_step.to_device_batch(
            train_step.place_packed_batch(batch, mesh, encoder, chunks), mesh)
        meter.measure_flops(update, state, gbatch)
        state, m = update(state, gbatch)
        _log_memory_of_first_steps(step - start, m)
        saver.pending.append((step, m))
        meter.add(batch, m)
        if step % log_every == 0 or step == total:
          saver.check_steps()
          out, by_type = meter.flush(jax.device_get(m))
          writer.write(step, out)
          logging.info("step %d/%d loss %.4f (%.2f s/step, %.0f tokens/s)", step, total,
                       out["train/loss"], out["train/step_seconds"], out["train/tokens_per_s"])
          console.progress(step, total, by_type, out["train/step_seconds"])
        evaluate = bool(evals) and (step % eval_every == 0 or step == total) and not stops.signal
        # Evaluate, then save with what was measured: with config.selection the manager keeps
        # the best step by its metric, so every evaluated step is saved. A signal during the
        # evaluation abandons it, and the step is saved (without a claim to be the best).
        measured = run_evals(step) if evaluate else None
        saver.save(step, state, metrics=measured if selection else None,
                   force=step == total or stops.signal is not None or (evaluate and bool(selection)))
        if stops.signal:
          break
    # Said only once the (async) save is final: a checkpoint announced is one that exists.
    saver.finish()
    hardware.log_memory("end")
  _say_how_it_ended(workdir, step, total, stops.signal, console)
  return state


# ------------------------------------------------------------------------------------------------
# What the run does around the method: checks before it starts, saving only good steps, the end.
# ------------------------------------------------------------------------------------------------
def _check_config(config) -> None:
  """What can be refused before anything loads."""
  distill.settings(config)
  selection = config.get("selection")
  during = (config.get("train_evals") or list(config.get("evals") or {})
            if int(config.get("eval_every", 0)) else [])
  if selection and selection.metric.split("/")[0] not in during:
    raise ValueError(f"config.selection.metric={selection.metric!r}: no evaluator of {during} "
                     "(config.train_evals, run every config.eval_every steps) measures it")
  no_negatives = [c.get("name") for c in config.input.sources if not c.get("num_negatives")]
  if config.loss.get("variant") == "paper" and no_negatives:
    raise ValueError("loss.variant='paper' learns only from hard negatives, but sources "
                     f"{no_negatives} have num_negatives=0: give them negatives or use "
                     "variant 'standard'")


def _check_saved_config(workdir, config_json: dict, allow: tuple[str, ...],
                        console: run_dir.Console) -> int | None:
  """Compares the config with the one saved with the newest readable checkpoint (before the
  model loads, so a refused resume costs nothing); says each allowed change. Returns that
  checkpoint's step, or None."""
  for step in reversed(ckpt_lib.finished_steps(workdir)):
    try:
      saved = ckpt_lib.saved_config(workdir, step)
    except (ckpt_lib.CorruptCheckpointError, FileNotFoundError):
      continue  # damaged: named when the state is restored
    for key, old, new in ckpt_lib.check_resume_config(saved, config_json, allow,
                                                          f"checkpoint {step}"):
      console.say(f"config change on resume: {key}: {old!r} -> {new!r}")
    return step
  return None


def _train_evaluators(config, encoder) -> dict[str, Any]:
  """The evaluators run every eval_every steps: config.train_evals names them (default all of
  config.evals; e.g. only a cheap curve)."""
  if not config.get("evals"):
    return {}
  from hybrid_ir import evaluators
  during = config.get("train_evals") or list(config.evals)
  unknown = [n for n in during if n not in config.evals]
  if unknown:
    raise ValueError(f"config.train_evals names {unknown}, which config.evals lacks; it has "
                     f"{list(config.evals)}")
  return evaluators.make({n: config.evals[n] for n in during},
                         functools.partial(encoder.encode, progress=False))


def _log_memory_of_first_steps(n: int, metrics: dict) -> None:
  """The first step compiles, the second shows the steady state (benchmarks/bench_memory.py)."""
  if n <= 2:
    jax.block_until_ready(metrics)
    hardware.log_memory("first step (compile)" if n == 1 else "second step")


class _Saver:
  """Saves checkpoints, never one holding a step that was not ok, nor after the lease was lost.

  `pending` holds (step, metrics) whose `ok` flag has not been read; `check_steps` reads them
  (at log steps and before every save) and raises naming the first bad step. Async saves' write
  errors surface at the next save or at `finish`, named for their step (a full disk too).
  """

  def __init__(self, workdir, manager, pipeline, config, lease, max_param_norm: float):
    self.workdir, self.manager, self.pipeline, self.config = workdir, manager, pipeline, config
    self.lease, self.max_param_norm = lease, max_param_norm
    self.pending: list[tuple[int, dict]] = []
    self.writing = None  # the step of the newest save started (async)

  def check_steps(self) -> None:
    oks = jax.device_get([m["ok"] for _, m in self.pending])
    for (bad, m), ok in zip(self.pending, oks):
      if not ok:
        why = train_step.why_not_ok(jax.device_get(m), self.max_param_norm)
        raise FloatingPointError(
            f"step {bad}: {why}. No checkpoint from step {bad} on is written; the last good "
            f"checkpoint is {self.manager.latest_step()} in "
            f"{ckpt_lib.checkpoint_dir(self.workdir)}. Lower optimizer.lr or check that batch "
            "(train/batch_fingerprint in metrics.jsonl)")
    self.pending.clear()

  def finish(self) -> None:
    """Waits for the async save in flight."""
    if self.writing is not None:
      with ckpt_lib.disk_full_named(self.manager, self.writing):
        self.manager.wait_until_finished()

  def save(self, step: int, state, force: bool = False,
           metrics: dict[str, float] | None = None) -> bool:
    """Saves when the interval says so or `force`, with the step's evaluation `metrics` (for
    the manager's keep_best); whether a save started."""
    if not (force or self.manager.should_save(step)):
      return False
    self.check_steps()
    if self.lease is not None:
      self.lease.check()
    self.finish()  # Orbax would wait for it too; here a full disk is named for its step
    with ckpt_lib.disk_full_named(self.manager, step):
      ckpt_lib.check_free_space(self.manager, step)
      started = ckpt_lib.save(self.manager, step, state, self.pipeline.get_state(), self.config,
                              force=force, metrics=metrics)
    first, self.writing = self.writing is None, step
    if first:  # once a run: what a save holds on the host, measured while nothing else runs
      self.finish()
      hardware.log_memory("first checkpoint save")
    return started


def _say_how_it_ended(workdir, step: int, total: int, signal: str | None,
                      console: run_dir.Console) -> None:
  where = ckpt_lib.checkpoint_dir(workdir) / str(step)
  if step < total:
    latest = ckpt_lib.latest_finished_step(workdir)
    if latest == step:
      console.say(f"{signal} at step {step}: checkpoint {where} saved; exiting "
                  "(run the same command to resume)")
    else:
      console.say(f"{signal} at step {step}: no checkpoint of step {step} was written; "
                  f"the newest is {latest}; exiting (run the same command to resume from it)")
  else:
    if jax.process_index() == 0:
      run_dir.write_finished(workdir, step)  # the eval binary's signal that no step follows
    console.say(f"finished: step {step} of {total}; checkpoint {where}; metrics "
                f"{workdir / 'metrics.jsonl'}")


def _quarantine(workdir, manager, bad: dict[int, str], console: run_dir.Console) -> None:
  """Moves damaged steps newer than the restored one aside (process 0; the others wait), so that
  training can write those steps again; they are kept for inspection, never deleted."""
  if jax.process_index() == 0:
    for s in sorted(bad):
      if (ckpt_lib.checkpoint_dir(workdir) / str(s)).exists():
        dst = ckpt_lib.quarantine(workdir, s)
        console.say(f"moved damaged checkpoint {s} to {dst}")
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("hybrid_ir.train: damaged checkpoints moved")
  manager.reload()


if __name__ == "__main__":
  # TensorFlow's C++ INFO lines (oneDNN notes, twice) are no news to a person at the console.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  define_flags()
  try:
    config_flags.run(main)
  except SystemExit as e:
    _exit_now(e.code)
