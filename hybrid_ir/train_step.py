"""The update step hybrid_ir.train runs, as a library: benchmarks and tests build the same step.

What it holds, in the order a step uses it:
  - the optimizer: `learning_rate` (warm-up, then decay), `make_optimizer` (AdamW, clipping,
    the learned temperature's own rate), `make_table_update` (how the token-embedding table is
    updated: hybrid_ir.table_update);
  - the loss and its gradients: `make_loss_and_grads` (InfoNCE over the global batch through
    hybrid_ir.losses; GradCache when config.grad_cache_chunks > 1);
  - `make_train_step`: one jitted, sharded (state, batch) -> (state, metrics), with the `ok`
    flag that keeps a diverged state from ever being saved;
  - the host's batch -> the step's global arrays: `training_tokenizer`, `place_packed_batch`,
    `to_device_batch`;
  - what a step measures: `params_norm`, `step_flops`, `mfu`.

Config keys read here: optimizer.*, loss.*, grad_cache_chunks, max_param_norm_growth,
total_steps, input.packing (see hybrid_ir.train's docstring for their meanings).
"""
import functools
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hybrid_ir import distill
from hybrid_ir import losses
from hybrid_ir import sharding
from hybrid_ir import table_update
from hybrid_ir.models import tokenizers


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
  ['negative_identity', 'negative_valid'], and with config.loss.distill 'teacher_query' and
  'teacher_passage' [B, D] (`distill.attach`).
  The loss is InfoNCE (losses.info_nce), plus loss.distill.weight times `losses.distill_mse` of
  queries and passages averaged, or that term alone with loss.distill.only.
  With config.grad_cache_chunks > 1 the gradient is computed GradCache-style (Gao et al. 2021).
  """
  lc = config.loss
  chunks = grad_cache_chunks(config)
  distilled = distill.settings(config)

  def loss_from_embeddings(loss_params, q, p, n, batch):
    temp = (losses.temperature_from_log(loss_params["log_temperature"])
            if lc.get("learn_temperature") else lc.temperature)
    mask = lc.get("mask_false_negatives", True)
    loss, metrics = losses.info_nce(
        q, p, n, temperature=temp, variant=lc.get("variant", "standard"),
        symmetric=lc.get("symmetric", False),
        identities=batch["identity"] if mask else None,
        negative_identities=batch.get("negative_identity") if mask else None,
        negative_valid=batch.get("negative_valid"))
    if distilled:  # the teacher's pivot embeddings of each row's group (hybrid_ir.distill)
      mse = (losses.distill_mse(q, batch["teacher_query"])
             + losses.distill_mse(p, batch["teacher_passage"])) / 2
      metrics.update(info_nce=loss, distill_mse=mse)
      loss = distilled["weight"] * mse + (0.0 if distilled["only"] else loss)
    return loss, metrics

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

  XLA's cost analysis of an SPMD-partitioned program counts one device's share (a matmul sharded
  over 8 devices reports 1/8 of its FLOPs), so it is divided by one device's peak; equivalently,
  the global FLOPs over peak x devices.
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
                                "negative_valid", *distill.BATCH_FIELDS) if k in batch}
  return sharding.host_local_to_global(keep, mesh)


def why_not_ok(metrics: dict, max_norm: float) -> str:
  """Why a step's update was not ok (see `make_train_step`), from its metrics on the host."""
  vals = {k: float(metrics[k]) for k in ("loss", "grad_norm", "param_norm")}
  if not all(map(np.isfinite, vals.values())):
    return f"non-finite training values {vals}"
  return (f"the parameter norm is {vals['param_norm']:.3g}, above {max_norm:.3g} "
          "(config.max_param_norm_growth times the initial norm): the run diverges")


class StepMeter:
  PER_TYPE = ("loss", "distill_mse")

  """What the steps between two log steps measured: the loss per batch type, examples, tokens
  and token slots per second, the share of slots that held real tokens (what padding costs) and,
  with `peak_flops` (one device's peak), MFU from XLA's cost analysis of each batch shape.

  Inputs: `add(batch, loss)` after every step (the pipeline's host-local batch; the step's loss,
  left on device); `flush(metrics)` at a log step, with that step's metrics on the host, returns
  the `train/*` metrics to write and restarts the window.
  """

  def __init__(self, peak_flops: float | None = None):
    self.peak_flops = peak_flops
    self.flops_by_shape = {}
    self._restart()

  def _restart(self):
    self.t0, self.examples, self.tokens, self.slots = time.time(), 0, 0, 0
    self.per_type: dict[str, list[dict]] = {}

  def measure_flops(self, update, state, device_batch) -> None:
    """Compiles `update` once per new batch shape to read its FLOPs (only with peak_flops)."""
    if self.peak_flops and (shape := repr(jax.tree.map(np.shape, device_batch))) not in \
        self.flops_by_shape:
      self.flops_by_shape[shape] = step_flops(update.lower(state, device_batch).compile())

  def add(self, batch: dict, metrics: dict) -> None:
    masks = [batch[k]["attention_mask"] for k in ("query", "passage", "negative") if k in batch]
    hosts = jax.process_count()
    self.examples += len(batch["group"]) * hosts
    self.tokens += sum(int(m.sum()) for m in masks) * hosts
    self.slots += sum(m.size for m in masks) * hosts
    self.per_type.setdefault(batch["batch_type"], []).append(
        {k: metrics[k] for k in self.PER_TYPE if k in metrics})
    self.fingerprint = batch["fingerprint"]

  def flush(self, metrics: dict) -> tuple[dict[str, Any], dict[str, float]]:
    dt = time.time() - self.t0
    out = {f"train/{k}": float(v) for k, v in metrics.items() if k != "ok"}
    for bt, rows in jax.device_get(self.per_type).items():
      out.update({f"train/{k}_{bt}": float(np.mean([r[k] for r in rows])) for k in rows[0]})
    by_type = {bt: out[f"train/loss_{bt}"] for bt in self.per_type}
    steps = sum(map(len, self.per_type.values()))
    out.update({"train/batch_fingerprint": self.fingerprint,  # of the log step's batch
                "train/examples_per_s": self.examples / dt,
                "train/tokens_per_s": self.tokens / dt,
                "train/real_token_share": self.tokens / max(1, self.slots),
                "train/step_seconds": dt / max(1, steps)})
    if self.peak_flops and self.flops_by_shape:
      out["train/mfu"] = mfu(np.mean(list(self.flops_by_shape.values())),
                             out["train/step_seconds"], self.peak_flops)
    self._restart()
    return out, by_type
