"""Trains a dual encoder on hybrid batches: `python -m hybrid_ir.train --config <file>[:arg] --workdir <dir>`.

Reads top to bottom as the method: mesh -> hybrid-batch pipeline -> encoder + AdamW -> a jitted,
sharded update step whose InfoNCE uses the *global* batch (plus every device's hard negatives) ->
Orbax checkpoints with the pipeline state, auto-resumed from the workdir.

Config keys read here (besides `model`, `mesh`, `input`, `evals`, owned by their modules):
  seed, total_steps, log_every, eval_every (0: off), peak_flops (per device, for MFU; optional),
  optimizer: lr, weight_decay, b1, b2, eps, warmup_steps, decay ('cosine'|'linear'|'constant'),
             grad_clip (global norm; 0: off)
  loss: variant ('standard'|'paper'), temperature, learn_temperature, symmetric,
        mask_false_negatives (mask in-batch positives and hard negatives that share a passage
        identity with a query's positive; the sampler already avoids them, see losses.info_nce)
Optional keys (peak_flops, b1, b2, eps) are not in every shipped config, whose keys are locked:
add them to the config file rather than as --config overrides.
  grad_cache_chunks: 0/1 = off; n > 1 = GradCache: embed in n chunks without activations kept,
        then back-propagate chunk by chunk (same gradients, ~1/n of the activation memory).
  checkpoint: every, keep, async_save
Outputs in the workdir: checkpoints/, metrics.jsonl, tensorboard/ (process 0 only).
Several processes (a pod, or processes on one machine): jax.distributed is initialised from
--coordinator_address/--num_processes/--process_id or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/
JAX_PROCESS_ID, or detected by JAX itself on TPU pods and SLURM.
Signals: SIGTERM (TPU preemption) -> save a checkpoint, exit 0. NaN/Inf -> raise, last good
checkpoint kept (never saved over).
"""
import functools
import json
import os
import signal
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hybrid_ir import checkpoint as ckpt_lib
from hybrid_ir import config_flags
from hybrid_ir import losses
from hybrid_ir import sharding



def define_flags() -> None:
  """The binary's flags; defined only when run as a program, so that other code (the experiment
  runner, notebooks) can import this module next to hybrid_ir.eval and call `train` directly."""
  config_flags.define_config()
  flags.DEFINE_string("workdir", None, "Output directory (checkpoints, metrics).")
  sharding.define_distributed_flags()


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW (decay only on matrices, as BERT/HF do) with warm-up + decay and global-norm clipping."""
  oc = config.optimizer
  warmup, total = int(oc.get("warmup_steps", 0)), int(config.total_steps)
  decay = oc.get("decay", "linear")
  end = {"cosine": 0.0, "linear": 0.0, "constant": oc.lr}.get(decay)
  if end is None:
    raise ValueError(f"config.optimizer.decay={decay!r}; valid: cosine, linear, constant")
  if decay == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, oc.lr, max(warmup, 1), max(total, warmup + 1))
  else:
    lr = optax.join_schedules([optax.linear_schedule(0.0, oc.lr, max(warmup, 1)),
                               optax.linear_schedule(oc.lr, end, max(total - warmup, 1))], [warmup])
  adamw = optax.adamw(lr, b1=oc.get("b1", 0.9), b2=oc.get("b2", 0.999), eps=oc.get("eps", 1e-8),
                      weight_decay=oc.get("weight_decay", 0.01),
                      mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
  clip = oc.get("grad_clip", 1.0)
  return optax.chain(optax.clip_by_global_norm(clip), adamw) if clip else adamw


def make_loss_and_grads(encoder, config):
  """(trainable, batch) -> ((loss, metrics), grads); trainable = {'params', 'loss_params'}.

  batch (global arrays): 'query', 'passage', ['negative'] token dicts, 'identity',
  ['negative_identity', 'negative_valid'].
  With config.grad_cache_chunks > 1 the gradient is computed GradCache-style (Gao et al. 2021).
  """
  lc = config.loss
  chunks = int(config.get("grad_cache_chunks", 0))

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


def to_device_batch(batch: dict, mesh) -> dict:
  """Host-local pipeline batch -> global arrays the update step takes (strings -> int ids)."""
  keep = {k: batch[k] for k in ("query", "passage", "negative", "identity", "negative_identity",
                                "negative_valid") if k in batch}
  return sharding.host_local_to_global(keep, mesh)


class MetricWriter:
  """JSONL + TensorBoard, written by process 0 only.

  `start` is the step training (re)starts from: rows of later steps, written before a crash
  or preemption and about to be recomputed, are dropped so that no step appears twice.
  """

  def __init__(self, workdir: epath.Path, start: int = 0):
    self.active = jax.process_index() == 0
    if self.active:
      path = workdir / "metrics.jsonl"
      if path.exists():
        rows = path.read_text().splitlines(keepends=True)
        kept = [r for r in rows if r.strip() and json.loads(r)["step"] <= start]
        if len(kept) != len(rows):
          logging.info("metrics.jsonl: dropped %d rows after step %d (recomputed on resume)",
                       len(rows) - len(kept), start)
          path.write_text("".join(kept))
      self.jsonl = path.open("a")
      try:
        import tensorboardX
        self.tb = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))
      except ImportError:
        logging.warning("tensorboardX not installed: metrics go to metrics.jsonl only")
        self.tb = None

  def write(self, step: int, metrics: dict[str, float]):
    if not self.active:
      return
    self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self.jsonl.flush()
    for k, v in metrics.items():
      if self.tb and isinstance(v, (int, float)):
        self.tb.add_scalar(k, v, step)

  def close(self):
    if self.active:
      self.jsonl.close()
      if self.tb:
        self.tb.close()


def main(argv) -> None:
  del argv
  if not flags.FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  sharding.maybe_initialize_distributed(**sharding.distributed_args_from_flags())
  train(flags.FLAGS.config, flags.FLAGS.workdir)


def train(config, workdir: str | os.PathLike) -> dict[str, Any]:
  """Runs (or resumes) training; returns the final state. See the module docstring."""
  # ----------------------------------------------------------------------------------------------
  # Logging.
  # ----------------------------------------------------------------------------------------------
  sharding.maybe_initialize_distributed()
  workdir = epath.Path(workdir)  # local or gs://
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0 and "://" not in str(workdir):
    logging.get_absl_handler().use_absl_log_file("train", str(workdir))
  logging.info("config:\n%s", config)
  no_negatives = [c.get("name") for c in config.input.sources if not c.get("num_negatives")]
  if config.loss.get("variant") == "paper" and no_negatives:
    raise ValueError("loss.variant='paper' learns only from hard negatives, but sources "
                     f"{no_negatives} have num_negatives=0: give them negatives or use "
                     "variant 'standard'")
  stop = {"sigterm": False}
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))

  # ----------------------------------------------------------------------------------------------
  # Mesh.
  # ----------------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(config.get("mesh"))
  logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
               jax.process_count())

  # ----------------------------------------------------------------------------------------------
  # Model & optimizer.
  # ----------------------------------------------------------------------------------------------
  t0 = time.time()
  from hybrid_ir import models  # heavy import; keeps `--help` fast
  encoder = models.load_encoder(config.model)
  tx = make_optimizer(config)
  init_temp = float(config.loss.get("temperature", 0.05))
  trainable = {"params": encoder.params,
               "loss_params": {"log_temperature": jnp.asarray(np.log(init_temp), jnp.float32)}}
  logging.info("encoder %s: %.1fM params, loaded in %.1fs", encoder.name,
               sum(x.size for x in jax.tree.leaves(encoder.params)) / 1e6, time.time() - t0)

  # ----------------------------------------------------------------------------------------------
  # Shard & transfer: params by their annotations / the FSDP rule; optimizer state alike.
  # ----------------------------------------------------------------------------------------------
  param_sh = {"params": sharding.param_shardings(encoder.params, mesh,
                                                 getattr(encoder, "partition_specs", None)),
              "loss_params": {"log_temperature": sharding.replicated(mesh)}}
  trainable = jax.device_put(trainable, param_sh)
  abstract_opt = jax.eval_shape(tx.init, trainable)
  # Optimizer moments mirror the params; counters and other scalars are replicated.
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_sh,
                                 transform_non_params=lambda _: sharding.replicated(mesh))
  rep = sharding.replicated(mesh)
  state_sh = {"params": param_sh["params"], "loss_params": param_sh["loss_params"],
              "opt_state": opt_sh, "step": rep}
  init_state = jax.jit(lambda tr: {
      "params": tr["params"], "loss_params": tr["loss_params"], "opt_state": tx.init(tr),
      "step": jnp.zeros((), jnp.int32)},
      out_shardings=state_sh)

  # ----------------------------------------------------------------------------------------------
  # Update step: one jit, state donated, shardings pinned.
  # ----------------------------------------------------------------------------------------------
  loss_and_grads = make_loss_and_grads(encoder, config)

  @functools.partial(jax.jit, donate_argnums=(0,), out_shardings=(state_sh, rep))
  def update(state, batch):
    trainable = {"params": state["params"], "loss_params": state["loss_params"]}
    (loss, m), grads = loss_and_grads(trainable, batch)
    updates, opt_state = tx.update(grads, state["opt_state"], trainable)
    trainable = optax.apply_updates(trainable, updates)
    m.update(loss=loss, grad_norm=optax.tree.norm(grads),
             update_norm=optax.tree.norm(updates),
             param_norm=optax.tree.norm(trainable["params"]))
    return dict(trainable, opt_state=opt_state, step=state["step"] + 1), m

  # ----------------------------------------------------------------------------------------------
  # Checkpoint load (auto-resume) and input pipeline at the restored position.
  # ----------------------------------------------------------------------------------------------
  cc = config.checkpoint
  manager = ckpt_lib.make_manager(workdir, max_to_keep=cc.get("keep", 3),
                                  save_interval_steps=cc.get("every", 1000),
                                  async_save=cc.get("async_save", True))
  latest = manager.latest_step()
  data_state = None
  state = init_state(trainable)
  if latest is not None:
    state, data_state, _ = ckpt_lib.restore(manager, latest, ckpt_lib.abstract(state))
    logging.info("resumed from step %d", latest)
  del trainable
  from hybrid_ir import input_pipeline  # tensorflow import: after jax has claimed the devices
  pipeline = input_pipeline.make_pipeline(config.input, encoder.tokenize, state=data_state)
  start = int(state["step"])
  writer = MetricWriter(workdir, start)

  # ----------------------------------------------------------------------------------------------
  # Evaluators (optional; the same ones eval.py runs).
  # ----------------------------------------------------------------------------------------------
  def run_evals(step):
    from hybrid_ir import eval as eval_lib
    predict = functools.partial(encoder.encode, progress=False)
    for name, evaluator in eval_lib.make_evaluators(config, predict).items():
      t = time.time()
      results = dict(evaluator.run(state["params"]))
      writer.write(step, {**results, f"{name}/eval_seconds": time.time() - t})

  # ----------------------------------------------------------------------------------------------
  # Train loop.
  # ----------------------------------------------------------------------------------------------
  def save(step, force=False):
    return ckpt_lib.save(manager, step, state, pipeline.get_state(), config, force=force)

  log_every, total = int(config.get("log_every", 10)), int(config.total_steps)
  eval_every = int(config.get("eval_every", 0))
  peak = config.get("peak_flops")
  flops_by_shape = {}
  window = {"t": time.time(), "examples": 0, "tokens": 0, "losses": {}}
  for step in range(start + 1, total + 1):
    batch = next(pipeline)
    if batch["step"] != step - 1:
      raise RuntimeError(f"pipeline is at batch {batch['step']} but the model at step {step - 1}")
    gbatch = to_device_batch(batch, mesh)
    if peak and (shape := jax.tree.map(np.shape, gbatch).__repr__()) not in flops_by_shape:
      cost = update.lower(state, gbatch).compile().cost_analysis()
      flops_by_shape[shape] = float((cost[0] if isinstance(cost, list) else cost).get("flops", 0))
    state, m = update(state, gbatch)
    n_tok = sum(int(batch[k]["attention_mask"].sum()) for k in ("query", "passage", "negative")
                if k in batch) * jax.process_count()
    window["examples"] += len(batch["group"]) * jax.process_count()
    window["tokens"] += n_tok
    window["losses"].setdefault(batch["batch_type"], []).append(m["loss"])
    window["fingerprint"] = batch["fingerprint"]
    is_last = step == total
    if step % log_every == 0 or is_last or manager.should_save(step) or stop["sigterm"]:
      m = jax.device_get(m)
      bad = [k for k in ("loss", "grad_norm", "param_norm") if not np.isfinite(m[k])]
      if bad:
        raise FloatingPointError(f"step {step}: non-finite {bad} ({ {k: m[k] for k in bad} }); "
                                 f"not saving; last good checkpoint: {manager.latest_step()}")
    if step % log_every == 0 or is_last:
      dt = time.time() - window["t"]
      out = {f"train/{k}": float(v) for k, v in m.items()}
      for bt, ls in window["losses"].items():
        out[f"train/loss_{bt}"] = float(np.mean(jax.device_get(ls)))
      out.update({"train/batch_fingerprint": window["fingerprint"],  # of this step's batch
                  "train/examples_per_s": window["examples"] / dt,
                  "train/tokens_per_s": window["tokens"] / dt,
                  "train/step_seconds": dt / max(1, sum(map(len, window["losses"].values())))})
      if peak and flops_by_shape:
        out["train/mfu"] = (np.mean(list(flops_by_shape.values())) / out["train/step_seconds"]
                            / peak)
      writer.write(step, out)
      logging.info("step %d/%d loss %.4f (%.2f s/step, %.0f tokens/s)", step, total,
                   out["train/loss"], out["train/step_seconds"], out["train/tokens_per_s"])
      window = {"t": time.time(), "examples": 0, "tokens": 0, "losses": {}}
    save(step, force=is_last or stop["sigterm"])
    if eval_every and (step % eval_every == 0 or is_last) and config.get("evals"):
      run_evals(step)
    if stop["sigterm"]:
      logging.warning("SIGTERM at step %d: checkpoint saved, exiting", step)
      break
  manager.wait_until_finished()
  manager.close()
  writer.close()
  signal.signal(signal.SIGTERM, previous_handler)
  return state


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=config_flags.parse_flags)
