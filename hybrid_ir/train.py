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
        identity with a query's positive; the sampler already avoids them, see losses.info_nce)
  max_param_norm_growth: a step whose parameter norm exceeds this times the initial one is a
        divergence, treated like NaN (see Faults; optional, default 100; 0: no bound)
Optional keys (peak_flops, max_param_norm_growth, b1, b2, eps) are not in every shipped config,
whose keys are locked: add them to the config file rather than as --config overrides.
  grad_cache_chunks: 0/1 = off; n > 1 = GradCache: embed in n chunks without activations kept,
        then back-propagate chunk by chunk (same gradients, ~1/n of the activation memory).
  input.packing: pack training texts several to a row (`training_tokenizer`; default False).
  checkpoint: every, keep, async_save
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
    it, except config_flags.RESUME_SAFE_KEYS and the keys --allow_config_change=k1,k2 names.
  NaN/Inf, or parameters blowing up (norm above max_param_norm_growth, default 100, times the
    initial one): every step's update computes an `ok` flag on device; a step not ok is not
    applied, and the flags are read whenever metrics come to the host (log steps) and before
    every save, so no checkpoint holds such a state; the error names the first bad step.
"""
import contextlib
import functools
import math
import os
import sys
import time
from typing import Any, Callable, NamedTuple

from absl import flags
from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hybrid_ir import checkpoint as ckpt_lib
from hybrid_ir import config_flags
from hybrid_ir import hardware
from hybrid_ir import losses
from hybrid_ir import run_dir
from hybrid_ir import sharding
from hybrid_ir import table_update
from hybrid_ir.models import tokenizers

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


def learning_rate(config) -> optax.Schedule:
  """Linear warm-up from 0 to optimizer.lr, then cosine or linear decay to 0, or constant."""
  oc = config.optimizer
  warmup, total = int(oc.get("warmup_steps", 0)), int(config.total_steps)
  decay = oc.get("decay", "linear")
  end = {"cosine": 0.0, "linear": 0.0, "constant": oc.lr}.get(decay)
  if end is None:
    raise ValueError(f"config.optimizer.decay={decay!r}; valid: cosine, linear, constant")
  if decay == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, oc.lr, max(warmup, 1), max(total, warmup + 1))
  return optax.join_schedules([optax.linear_schedule(0.0, oc.lr, max(warmup, 1)),
                               optax.linear_schedule(oc.lr, end, max(total - warmup, 1))], [warmup])


def _adam_args(oc) -> dict:
  return dict(b1=oc.get("b1", 0.9), b2=oc.get("b2", 0.999), eps=oc.get("eps", 1e-8),
              weight_decay=oc.get("weight_decay", 0.01))


def make_optimizer(config, clip: bool = True, clip_slot: bool = False
                   ) -> optax.GradientTransformation:
  """AdamW (decay only on matrices, as BERT/HF do) with warm-up + decay and global-norm clipping
  (clip=False: without it, for an update that clips a larger gradient itself; with clip_slot
  an optax.identity() stands where the clip was, so the state has the clipped optimizer's
  structure, and checkpoints of the one restore into the other).

  loss.temperature_lr > 0 gives the loss's parameters (the learned temperature) that peak rate
  instead of optimizer.lr, same schedule shape (their AdamW steps are scaled by the ratio): Adam
  moves a parameter by about its rate per step whatever the gradient, so at an encoder's 3e-5 a
  learned log-temperature barely moves (0.05 -> 0.0499 in 150 steps, README's recipe row 5).
  """
  oc = config.optimizer
  adamw = optax.adamw(learning_rate(config), **_adam_args(oc),
                      mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
  temperature_lr = float(config.get("loss", {}).get("temperature_lr", 0.0))
  if temperature_lr:
    ratio = temperature_lr / oc.lr
    adamw = optax.chain(adamw, optax.stateless(lambda u, _: dict(
        u, loss_params=jax.tree.map(lambda x: x * ratio, u["loss_params"]))))
  max_norm = oc.get("grad_clip", 1.0)
  if not max_norm:
    return adamw
  if clip:
    return optax.chain(optax.clip_by_global_norm(max_norm), adamw)
  return optax.chain(optax.identity(), adamw) if clip_slot else adamw


def make_table_update(encoder, config
                      ) -> table_update.SparseTable | table_update.DenseTable | None:
  """How the train step updates the token-embedding table (hybrid_ir.table_update), from
  optimizer.embedding_update: 'dense' (default) -> DenseTable, exactly `make_optimizer`'s AdamW
  with the same optimizer state, or None (that AdamW on the whole tree) for a model that names no
  token table (Encoder.token_table); 'lazy' / 'frozen' -> SparseTable."""
  oc = config.optimizer
  mode = oc.get("embedding_update", "dense")
  if mode not in table_update.MODES:
    raise ValueError(f"config.optimizer.embedding_update={mode!r}; valid: "
                     f"{', '.join(table_update.MODES)}")
  if mode == "dense":
    if encoder.token_table is None:
      return None
    return table_update.DenseTable(encoder.token_table,
                                   make_optimizer(config, clip=False, clip_slot=True),
                                   learning_rate(config), oc.get("grad_clip", 1.0),
                                   **_adam_args(oc))
  if encoder.token_table is None:
    raise ValueError(f"config.optimizer.embedding_update={mode!r}, but model {encoder.name} "
                     "names no token-embedding table (Encoder.token_table)")
  return table_update.SparseTable(mode, encoder.token_table, make_optimizer(config, clip=False),
                                  learning_rate(config), oc.get("grad_clip", 1.0),
                                  **_adam_args(oc))


def make_loss_and_grads(encoder, config):
  """(trainable, batch) -> ((loss, metrics), grads); trainable = {'params', 'loss_params'}.

  batch (global arrays): 'query', 'passage', ['negative'] token dicts, 'identity',
  ['negative_identity', 'negative_valid'].
  With config.grad_cache_chunks > 1 the gradient is computed GradCache-style (Gao et al. 2021).
  """
  lc = config.loss
  chunks = grad_cache_chunks(config)

  def loss_from_embeddings(loss_params, q, p, n, batch):
    temp = (losses.temperature_from_log(loss_params["log_temperature"])
            if lc.get("learn_temperature") else lc.temperature)
    mask = lc.get("mask_false_negatives", True)
    return losses.info_nce(
        q, p, n, temperature=temp, variant=lc.get("variant", "standard"),
        symmetric=lc.get("symmetric", False),
        identities=batch["identity"] if mask else None,
        negative_identities=batch.get("negative_identity") if mask else None,
        negative_valid=batch.get("negative_valid"))

  def embed_all(params, batch):
    return [encoder.apply(params, batch[k]) if k in batch else None
            for k in ("query", "passage", "negative")]

  def plain(trainable, batch):
    def f(tr):
      return loss_from_embeddings(tr["loss_params"], *embed_all(tr["params"], batch), batch)
    return jax.value_and_grad(f, has_aux=True)(trainable)

  def split(x):  # [N, ...] -> [chunks, N/chunks, ...]; chunk c = rows c, c+chunks, ... so every
    # chunk keeps rows of every device and the batch sharding carries over to dim 1.
    return jnp.swapaxes(x.reshape(x.shape[0] // chunks, chunks, *x.shape[1:]), 0, 1)

  def cached(trainable, batch):
    params = trainable["params"]
    stop = jax.lax.stop_gradient
    embs = [None if t is None else
            stop(jax.lax.map(lambda c: encoder.apply(params, c), jax.tree.map(split, t)))
            for t in (batch.get("query"), batch.get("passage"), batch.get("negative"))]
    embs = [None if e is None else jnp.swapaxes(e, 0, 1).reshape(-1, e.shape[-1]) for e in embs]
    (loss, m), (g_lp, *g_embs) = jax.value_and_grad(
        loss_from_embeddings, argnums=(0, 1, 2, 3), has_aux=True)(
            trainable["loss_params"], *embs, batch)
    grads = jax.tree.map(jnp.zeros_like, params)
    for key, g in zip(("query", "passage", "negative"), g_embs):
      if key not in batch:
        continue
      def body(acc, xs):
        tokens, g_chunk = xs
        _, vjp = jax.vjp(lambda p: encoder.apply(p, tokens), params)
        return jax.tree.map(jnp.add, acc, vjp(g_chunk)[0]), None
      grads, _ = jax.lax.scan(body, grads, (jax.tree.map(split, batch[key]), split(g)))
    return (loss, m), {"params": grads, "loss_params": g_lp}

  return cached if chunks > 1 else plain


def grad_cache_chunks(config) -> int:
  """GradCache's chunk count; 1 when off (config 0 or 1)."""
  return max(1, int(config.get("grad_cache_chunks", 0)))


def training_tokenizer(encoder, config, mesh) -> Callable[[Any, str], dict]:
  """How training batches are tokenized: padded to a length bucket, or with config.input.packing
  packed several texts to a row (tokenizers.pack_ids), the rows a multiple of the local batch
  shards (several hosts then agree on a row count each step: `place_packed_batch`). Packing
  computes the same embeddings from 1.9x fewer token slots on XQuAD-R batches
  (benchmarks/bench_padding.py)."""
  if not config.input.get("packing", False):
    return encoder.tokenize
  if not encoder.packs:
    raise ValueError(f"config.input.packing=True, but model {encoder.name} takes no packed "
                     "batches; only the BERT / XLM-R family does")
  return functools.partial(encoder.tokenize_packed, row_multiple=sharding.local_batch_shards(mesh),
                           chunks=grad_cache_chunks(config))


class TrainStep(NamedTuple):
  """The sharded train state and its update (see `make_train_step`)."""
  init: Callable[[Any], dict]          # encoder params -> state, placed on the mesh
  update: Callable[[dict, dict], tuple[dict, dict]]  # jitted (state, batch) -> (state, metrics)
  state_shardings: dict
  max_param_norm: float                # a step whose new parameter norm exceeds it is not ok


def make_train_step(encoder, config, mesh, tx: optax.GradientTransformation | None = None
                    ) -> TrainStep:
  """The update step train.py runs, for train.py and benchmarks/bench_train.py alike.

  Inputs: encoder (`models.load_encoder`), config (optimizer, loss, grad_cache_chunks,
  total_steps), mesh; tx: an optimizer applied as is to the whole tree (a reference, or what a
  benchmark compares; not with optimizer.embedding_update 'lazy'/'frozen'); by default the update
  is `make_table_update`'s, or `make_optimizer(config)` for a model without a token table.
  State: {'params', 'loss_params': {'log_temperature'}, 'opt_state', 'step'}; params sharded by
  their annotations / the FSDP rule, optimizer moments alike, scalars replicated; the state is
  donated to `update`. `update` returns the loss's metrics plus loss, grad_norm, update_norm,
  param_norm and `ok`: loss, gradient norm and new parameter norm are finite, and that norm is
  at most `max_param_norm` (config.max_param_norm_growth, default 100, times the encoder's
  initial parameter norm; 0: no bound). A diverging run's parameters grow by orders of magnitude
  while still finite before any NaN appears (1e11 against 2.9e3 pretrained, seen here), so
  finiteness alone would let such a state be saved as "good". The caller reads the flags of the
  steps since its last check before every checkpoint write (train.py's `check_steps`), so no
  state from a step that is not ok is ever saved, and it stops naming the first such step. The
  update itself is not gated: keeping the old state on a bad step would need a select over
  params and both Adam moments after the norm is known, a second pass over 3x the model's memory
  (memory-bound; with the norms it was 0.47 s of a 5.9 s e5-small CPU step in one
  benchmarks/bench_peer.py run), for a state that is never saved anyway.
  """
  table_tx = make_table_update(encoder, config)
  if tx is not None:
    if isinstance(table_tx, table_update.SparseTable):
      raise ValueError("make_train_step: pass tx or set optimizer.embedding_update, not both")
    table_tx = None
  tx = None if table_tx else tx or make_optimizer(config)
  opt_init = table_tx.init if table_tx else tx.init
  rep = sharding.replicated(mesh)
  param_sh = {"params": sharding.param_shardings(encoder.params, mesh,
                                                 getattr(encoder, "partition_specs", None)),
              "loss_params": {"log_temperature": rep}}
  init_temp = float(config.loss.get("temperature", 0.05))
  abstract_trainable = {"params": encoder.params,
                        "loss_params": {"log_temperature": jax.ShapeDtypeStruct((), jnp.float32)}}
  # Optimizer moments mirror the params; counters and other scalars are replicated.
  if table_tx:
    opt_sh = table_tx.shardings(param_sh, abstract_trainable, rep)
  else:
    opt_sh = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, abstract_trainable),
                                   param_sh, transform_non_params=lambda _: rep)
  state_sh = {"params": param_sh["params"], "loss_params": param_sh["loss_params"],
              "opt_state": opt_sh, "step": rep}
  init_state = jax.jit(lambda tr: {
      "params": tr["params"], "loss_params": tr["loss_params"], "opt_state": opt_init(tr),
      "step": jnp.zeros((), jnp.int32)},
      out_shardings=state_sh)

  def init(params) -> dict:
    trainable = {"params": params,
                 "loss_params": {"log_temperature": jnp.asarray(np.log(init_temp), jnp.float32)}}
    return init_state(jax.device_put(trainable, param_sh))

  loss_and_grads = make_loss_and_grads(encoder, config)
  growth = float(config.get("max_param_norm_growth", 100.0))
  max_norm = growth * params_norm(encoder.params) if growth else float("inf")

  @functools.partial(jax.jit, donate_argnums=(0,), out_shardings=(state_sh, rep))
  def update(state, batch):
    trainable = {"params": state["params"], "loss_params": state["loss_params"]}
    if table_tx:
      (loss, m), grads, new, updates, opt_state = table_tx.step(
          loss_and_grads, trainable, state["opt_state"], batch, state["step"])
    else:
      (loss, m), grads = loss_and_grads(trainable, batch)
      updates, opt_state = tx.update(grads, state["opt_state"], trainable)
      new = optax.apply_updates(trainable, updates)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(new["params"])
    ok = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
          & (param_norm <= max_norm))
    m.update(loss=loss, grad_norm=grad_norm, update_norm=optax.tree.norm(updates),
             param_norm=param_norm, ok=ok)
    return dict(new, opt_state=opt_state, step=state["step"] + 1), m

  return TrainStep(init, update, state_sh, max_norm)


def params_norm(params) -> float:
  """Global L2 norm of a params tree, on the host (per-array BLAS norms: no device, no copy of
  float32 arrays), so that every process of a pod gets the same number without a collective."""
  return math.sqrt(sum(float(np.linalg.norm(np.asarray(x, np.float32).ravel())) ** 2
                       for x in jax.tree.leaves(params)))


def mfu(flops_per_step: float, step_seconds: float, peak_flops_per_device: float) -> float:
  """Model FLOPs utilisation from XLA's cost analysis of the compiled step.

  XLA's cost analysis of an SPMD-partitioned program counts one device's share (measured here: a
  matmul sharded over 8 devices reports 1/8 of its FLOPs), so it is divided by one device's peak;
  equivalently, the global FLOPs over peak x devices.
  """
  return flops_per_step / step_seconds / peak_flops_per_device


def step_flops(compiled) -> float:
  """FLOPs per step (one device's share, see `mfu`) from a compiled jax function."""
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost).get("flops", float("nan")))


def place_packed_batch(batch: dict, mesh, encoder, chunks: int = 1) -> dict:
  """Several processes with input.packing: each host's packed token fields -> its slice of one
  global packed batch (tokenizers.place_packed; with GradCache, of each chunk's). Each host
  packed its own texts to its own row count, so the hosts agree on the largest, one small
  all-gather per step. One process: as is."""
  kinds = [k for k in ("query", "passage", "negative") if "example" in batch.get(k, {})]
  if jax.process_count() == 1 or not kinds:
    return batch
  from jax.experimental import multihost_utils
  local_rows = np.array([batch[k]["input_ids"].shape[0] for k in kinds])
  rows = np.asarray(multihost_utils.process_allgather(local_rows)).max(axis=0)
  out = dict(batch)
  for kind, r in zip(kinds, rows.tolist()):
    n = len(batch[kind]["example_length"])
    first_text = sharding.process_batch_start(mesh, n)
    first_row = sharding.process_batch_start(mesh, r)
    out[kind] = tokenizers.join_chunks([
        tokenizers.place_packed(part, r // chunks, encoder.tokenizer.pad_id,
                                first_text=first_text // chunks, first_row=first_row // chunks,
                                total_texts=n * jax.process_count() // chunks)
        for part in tokenizers.split_chunks(batch[kind], chunks)])
  return out


def to_device_batch(batch: dict, mesh) -> dict:
  """Host-local pipeline batch -> global arrays the update step takes (strings -> int ids)."""
  keep = {k: batch[k] for k in ("query", "passage", "negative", "identity", "negative_identity",
                                "negative_valid") if k in batch}
  return sharding.host_local_to_global(keep, mesh)


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
  f = flags.FLAGS
  config_flags.require("workdir")
  sharding.maybe_initialize_distributed(**sharding.distributed_args_from_flags())
  _BINARY.update(allow_config_change=tuple(f.allow_config_change), exits_after=True)
  train(f.config, f.workdir)  # errors: one line on the console (config_flags.run)


def _exit_now(code) -> None:
  """Ends the binary once `train` has returned: the checkpoint is final, the metrics and log
  flushed. Interpreter teardown after that only destroys TF/XLA objects (3 s measured here) and
  can wait up to a minute on the tf.data iterator's autotuning thread, past a preemption's grace
  period; os._exit skips both."""
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
  config_flags.check_allowed_changes(allow)  # before anything in the workdir is touched
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
  no_negatives = [c.get("name") for c in config.input.sources if not c.get("num_negatives")]
  if config.loss.get("variant") == "paper" and no_negatives:
    raise ValueError("loss.variant='paper' learns only from hard negatives, but sources "
                     f"{no_negatives} have num_negatives=0: give them negatives or use "
                     "variant 'standard'")
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
  # Checkpoints: the config saved with the newest one must match (checked before the model loads).
  # ----------------------------------------------------------------------------------------------
  checked = None
  for step in reversed(ckpt_lib.finished_steps(workdir)):
    try:
      saved = ckpt_lib.saved_config(workdir, step)
    except (ckpt_lib.CorruptCheckpointError, FileNotFoundError):
      continue  # damaged: named when the state is restored below
    changed = config_flags.check_resume_config(saved, config_json, allow, f"checkpoint {step}")
    checked = step
    for key, old, new in changed:
      console.say(f"config change on resume: {key}: {old!r} -> {new!r}")
    break

  # ----------------------------------------------------------------------------------------------
  # Model & optimizer; shard & transfer; the update step (one jit, state donated, shardings pinned).
  # ----------------------------------------------------------------------------------------------
  t0 = time.time()
  from hybrid_ir import models  # heavy import; keeps `--help` fast
  encoder = models.load_encoder(config.model)
  logging.info("encoder %s: %.1fM params, loaded in %.1fs", encoder.name,
               sum(x.size for x in jax.tree.leaves(encoder.params)) / 1e6, time.time() - t0)
  hardware.log_memory("model loaded")
  tokenize = training_tokenizer(encoder, config, mesh)
  train_step = make_train_step(encoder, config, mesh)
  update = train_step.update

  # ----------------------------------------------------------------------------------------------
  # Checkpoint load (auto-resume, falling back over damaged steps) and input pipeline.
  # ----------------------------------------------------------------------------------------------
  cc = config.checkpoint
  manager = ckpt_lib.make_manager(workdir, max_to_keep=cc.get("keep", 3),
                                  save_interval_steps=cc.get("every", 1000),
                                  async_save=cc.get("async_save", True))
  with contextlib.ExitStack() as cleanup:  # closed in reverse, on any exit
    cleanup.callback(manager.close)
    state = train_step.init(encoder.params)
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
        config_flags.check_resume_config(restored.config, config_json, allow,
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
    writer = run_dir.MetricWriter(workdir, start, say=console.say)
    cleanup.callback(writer.close)

    # --------------------------------------------------------------------------------------------
    # Evaluators (optional; the registry eval.py uses), built once for the whole run.
    # --------------------------------------------------------------------------------------------
    eval_every = int(config.get("eval_every", 0))
    evals = {}
    if eval_every and config.get("evals"):
      from hybrid_ir import evaluators
      # train_evals: the names run during training (default all); e.g. only a cheap curve.
      during = config.get("train_evals") or list(config.evals)
      unknown = [n for n in during if n not in config.evals]
      if unknown:
        raise ValueError(f"config.train_evals names {unknown}, which config.evals lacks; it has "
                         f"{list(config.evals)}")
      evals = evaluators.make({n: config.evals[n] for n in during},
                              functools.partial(encoder.encode, progress=False))

    def run_evals(step):
      """Runs the evaluators; a stop request (preemption) abandons them at once."""
      ran = evaluators.run(evals, state["params"])
      for name in evals:
        try:
          with stops.interruptible():
            _, _, results = next(ran)
        except run_dir.Interrupted:
          console.say(f"{stops.signal} during the {name} evaluation at step {step}: evaluation "
                      "abandoned")
          return
        writer.write(step, results)

    # --------------------------------------------------------------------------------------------
    # Train loop.
    # --------------------------------------------------------------------------------------------
    pending = []  # (step, metrics) whose `ok` flag has not been read yet
    max_norm = train_step.max_param_norm

    def check_steps():
      """Raises naming the first step since the last check that was not ok, before any
      checkpoint holding its update (or a later one) is written."""
      oks = jax.device_get([m["ok"] for _, m in pending])
      for (bad, m), ok in zip(pending, oks):
        if not ok:
          vals = {k: float(v) for k, v in jax.device_get(
              {k: m[k] for k in ("loss", "grad_norm", "param_norm")}).items()}
          why = (f"non-finite training values {vals}" if not all(map(np.isfinite, vals.values()))
                 else f"the parameter norm is {vals['param_norm']:.3g}, above "
                      f"{max_norm:.3g} (config.max_param_norm_growth times the initial norm): "
                      "the run diverges")
          raise FloatingPointError(
              f"step {bad}: {why}. No checkpoint from step {bad} on is written; the last good "
              f"checkpoint is {manager.latest_step()} in {ckpt_lib.checkpoint_dir(workdir)}. "
              "Lower optimizer.lr or check that batch "
              "(train/batch_fingerprint in metrics.jsonl)")
      pending.clear()

    writing = {"step": None}  # the step of the newest save started (async)

    def finish_saves():
      """Waits for the async save; its write errors surface here, named for its step."""
      if writing["step"] is not None:
        with ckpt_lib.disk_full_named(manager, writing["step"]):
          manager.wait_until_finished()

    def save(step, force=False) -> bool:
      """Saves when the interval says so or `force`; whether a save started."""
      if not (force or manager.should_save(step)):
        return False
      check_steps()
      if lease is not None:
        lease.check()
      finish_saves()  # Orbax would wait for it too; here a full disk is named for its step
      with ckpt_lib.disk_full_named(manager, step):
        ckpt_lib.check_free_space(manager, step)
        started = ckpt_lib.save(manager, step, state, pipeline.get_state(), config, force=force)
      first, writing["step"] = writing["step"] is None, step
      if first:  # once a run: what a save holds on the host, measured while nothing else runs
        finish_saves()
        hardware.log_memory("first checkpoint save")
      return started

    log_every = int(config.get("log_every", 10))
    peak = config.get("peak_flops")
    flops_by_shape = {}
    window = {"t": time.time(), "examples": 0, "tokens": 0, "slots": 0, "losses": {}}
    step = start
    console.start(start, total)
    cleanup.callback(console.close)
    with run_dir.StopRequests() as stops:
      for step in range(start + 1, total + 1):
        batch = next(pipeline)
        if step == start + 1:
          hardware.log_memory("first batch")
        if lease is not None:
          lease.check()  # never write after another trainer took the workdir over
        if batch["step"] != step - 1:
          raise RuntimeError(f"pipeline is at batch {batch['step']} but the model at step "
                             f"{step - 1}")
        batch = place_packed_batch(batch, mesh, encoder, grad_cache_chunks(config))
        gbatch = to_device_batch(batch, mesh)
        if peak and (shape := jax.tree.map(np.shape, gbatch).__repr__()) not in flops_by_shape:
          flops_by_shape[shape] = step_flops(update.lower(state, gbatch).compile())
        state, m = update(state, gbatch)
        if step == start + 1:
          jax.block_until_ready(m)
          hardware.log_memory("first step (compile)")
        elif step == start + 2:
          jax.block_until_ready(m)
          hardware.log_memory("second step")
        pending.append((step, m))
        masks = [batch[k]["attention_mask"] for k in ("query", "passage", "negative")
                 if k in batch]
        window["examples"] += len(batch["group"]) * jax.process_count()
        window["tokens"] += sum(int(m.sum()) for m in masks) * jax.process_count()
        window["slots"] += sum(m.size for m in masks) * jax.process_count()
        window["losses"].setdefault(batch["batch_type"], []).append(m["loss"])
        window["fingerprint"] = batch["fingerprint"]
        is_last = step == total
        console.advance()
        if step % log_every == 0 or is_last:
          check_steps()
          m = jax.device_get(m)
          dt = time.time() - window["t"]
          out = {f"train/{k}": float(v) for k, v in m.items() if k != "ok"}
          by_type = {bt: float(np.mean(jax.device_get(ls)))
                     for bt, ls in window["losses"].items()}
          out.update({f"train/loss_{bt}": v for bt, v in by_type.items()})
          out.update({"train/batch_fingerprint": window["fingerprint"],  # of this step's batch
                      "train/examples_per_s": window["examples"] / dt,
                      "train/tokens_per_s": window["tokens"] / dt,
                      # What padding costs: real tokens over the token slots the step computed.
                      "train/real_token_share": window["tokens"] / max(1, window["slots"]),
                      "train/step_seconds": dt / max(1, sum(map(len, window["losses"].values())))})
          if peak and flops_by_shape:
            out["train/mfu"] = mfu(np.mean(list(flops_by_shape.values())),
                                   out["train/step_seconds"], peak)
          writer.write(step, out)
          logging.info("step %d/%d loss %.4f (%.2f s/step, %.0f tokens/s)", step, total,
                       out["train/loss"], out["train/step_seconds"], out["train/tokens_per_s"])
          console.progress(step, total, by_type, out["train/step_seconds"])
          window = {"t": time.time(), "examples": 0, "tokens": 0, "slots": 0, "losses": {}}
        saved = save(step, force=is_last or stops.signal is not None)
        if eval_every and (step % eval_every == 0 or is_last) and evals and not stops.signal:
          run_evals(step)
          if stops.signal and not saved:
            save(step, force=True)  # the signal came during the evaluation
        if stops.signal:
          break
    # Said only once the (async) save is final: a checkpoint announced is one that exists.
    finish_saves()
    hardware.log_memory("end")
  where = ckpt_lib.checkpoint_dir(workdir) / str(step)
  if step < total:
    latest = ckpt_lib.latest_finished_step(workdir)
    if latest == step:
      console.say(f"{stops.signal} at step {step}: checkpoint {where} saved; exiting "
                  "(run the same command to resume)")
    else:
      console.say(f"{stops.signal} at step {step}: no checkpoint of step {step} was written; "
                  f"the newest is {latest}; exiting (run the same command to resume from it)")
  else:
    if jax.process_index() == 0:
      run_dir.write_finished(workdir, step)  # the eval binary's signal that no step follows
    console.say(f"finished: step {step} of {total}; checkpoint {where}; metrics "
                f"{workdir / 'metrics.jsonl'}")
  return state


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
