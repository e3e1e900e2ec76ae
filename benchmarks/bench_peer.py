r"""Our e5-small training step and evaluation encode against sentence-transformers and the hardware.

Everything is measured in one run, calls interleaved (one call of each timed function per round,
`--reps` rounds, medians reported), so background load hits every number alike:
  1. peer: our jitted train step (`train_step.make_train_step`: InfoNCE at temperature 0.05, AdamW,
     global-norm clip 1.0) vs sentence-transformers' MultipleNegativesRankingLoss (scale 20 = 1 /
     0.05, cosine similarity) + torch AdamW + clip 1.0 on the same e5-small weights (exported with
     `hybrid_ir.export`), the same pre-tokenized batch (32 queries x 32 tokens + 32 passages x 64,
     in-batch negatives) and the same thread count. The peer is tuned as a careful user would:
     torch.set_num_threads(cores), oneDNN on, fused AdamW, and torch.compile (its best of eager
     and compiled is the ratio's denominator). The first step's loss must agree within 1e-4.
  2. limit: a fp32 matmul probe (XLA and torch; e5-small's FFN shape 1024x384x1536, as
     bench_encode) and each part of our step (forward, forward+backward, with and without the
     250k-row embedding table's gradient, the optimizer update, the whole step, and the step
     with the table updated lazily or frozen: optimizer.embedding_update) as GFLOP/s (XLA's cost
     analysis) and share of XLA's probe.
  3. encode: a random sample of the full evaluation's own batches (all XQuAD-R + MLQA-R
     questions and candidates, length-sorted as `Encoder.encode` does, batch 64), extrapolated to
     all of them, against the time the useful FLOPs (real tokens, no padding) would take at the
     probe's rate; the same batches padded to the training buckets, side by side.

  python benchmarks/bench_peer.py                      # ~6-9 min on 2 busy cores
  python benchmarks/bench_peer.py --reps 2 --encode_sample 1000 --no_compile   # ~3 min

The lazy and frozen table updates are not exact AdamW (hybrid_ir.table_update): only their speed
is measured here; the README measures their effect on mAP.
"""
from __future__ import annotations

import argparse
import functools
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

# Runs from a checkout without `pip install -e .`.
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from hybrid_ir.hardware import cpu_model  # noqa: E402

TEMPERATURE = 0.05
LOSS_TOLERANCE = 1e-4


def interleaved(fns: dict, reps: int, warmup: int = 2,
                verbose: bool = True) -> dict[str, list[float]]:
  """Times of `reps` rounds, each calling every fn once in turn, after `warmup` calls of each
  (compile, first-touch allocation). Interleaving gives every fn the same background load."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for r in range(reps):
    for name, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
    if verbose:
      print(f"  round {r + 1}/{reps}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()
                                                  if t[-1] > 0.05), flush=True)
  return times


def encoder_flops(cfg, length: int) -> float:
  """Forward FLOPs of one sequence of `length` real tokens through a BERT encoder (matmuls only;
  2 per multiply-add): QKV + attention-out + FFN, plus QK^T and attention x V."""
  h, i = cfg.hidden_size, cfg.intermediate_size
  return cfg.num_hidden_layers * (length * (8 * h * h + 4 * h * i) + 4 * length * length * h)


# ------------------------------------------------------------------------------------------------
# The batch and our side
# ------------------------------------------------------------------------------------------------

def train_config(model: str = "e5-small"):
  import ml_collections
  from configs import common
  return ml_collections.ConfigDict(dict(
      total_steps=1000, grad_cache_chunks=0, model=common.model(model),
      optimizer=dict(lr=3e-5, weight_decay=0.01, warmup_steps=0, decay="constant", grad_clip=1.0),
      loss=common.loss(temperature=TEMPERATURE)))


def our_step(data_dir: str):
  """(config, encoder, mesh, global batch, train.py's step) for the e5-small batch below, as
  bench_step_variants and profile_step take them."""
  from hybrid_ir import models, sharding, train_step
  config = train_config()
  encoder = models.load_encoder(config.model)
  mesh = sharding.make_mesh({"data": -1})
  batch = real_batch(encoder, data_dir)
  batch = sharding.host_local_to_global(dict(batch, identity=np.arange(32, dtype=np.int32)), mesh)
  return config, encoder, mesh, batch, train_step.make_train_step(encoder, config, mesh)


def real_batch(encoder, data_dir: str, size: int = 32, q_len: int = 32, p_len: int = 64,
               seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """`size` XQuAD-R questions (any language) and their answer sentence + paragraph, with the
  model's prefixes, cut/padded to exactly q_len / p_len tokens: real text, fixed shapes."""
  from hybrid_ir.data import lareqa
  d = lareqa.load_lareqa(data_dir, "xquad-r")
  rows = np.random.default_rng(seed).choice(d.num_questions, size, replace=False)
  passages = [f"{d.cand_sentence[d.answer[r]]} {d.cand_context[d.answer[r]]}" for r in rows]
  tok = encoder.tokenizer
  ids = lambda texts, kind, n: [x[:n] for x in tok.encode_ids(texts, kind)]  # noqa: E731
  return {"query": tok.pad(ids([d.question_text[r] for r in rows], "query", q_len), q_len),
          "passage": tok.pad(ids(passages, "passage", p_len), p_len)}


class JaxSide:
  """Our step and its parts as zero-argument timed calls, each with XLA's FLOP count.

  Each function is compiled once (`lower().compile()`, whose executable is both timed and asked
  for its FLOPs). To fit next to the peer in a few GB, the parts share one train state: the
  AdamW-only part updates the step's own params and moments (timings do not depend on the
  values), and the forward parts read the encoder's params, which nothing donates.
  """

  def __init__(self, encoder, config, batch: dict, components: bool = True):
    import jax
    import jax.numpy as jnp
    import optax
    from hybrid_ir import losses, sharding, train_step
    mesh = sharding.make_mesh({"data": -1})
    n = batch["query"]["input_ids"].shape[0]
    self.batch = sharding.host_local_to_global(
        dict(batch, identity=np.arange(n, dtype=np.int32)), mesh)
    # A copy: the update donates its state, which must not free the encoder's own params.
    fresh = lambda: jax.tree.map(jnp.copy, encoder.params)  # noqa: E731
    self.fns, self.flops = {}, {}

    step = train_step.make_train_step(encoder, config, mesh)
    self.state = step.init(fresh())
    self.update = step.update.lower(self.state, self.batch).compile()
    self.flops["jax step"] = train_step.step_flops(self.update)

    def run_step():
      self.state, m = self.update(self.state, self.batch)
      jax.block_until_ready(m["loss"])
    self.fns["jax step"] = run_step
    # The table's other updates (optimizer.embedding_update, hybrid_ir.table_update), each its
    # own train state: lazy (only the batch's rows; not exact AdamW) and frozen.
    for mode in ("lazy", "frozen"):
      name = f"jax step, table {mode}"
      mode_config = config.copy_and_resolve_references()
      mode_config.optimizer.embedding_update = mode
      mode_step = train_step.make_train_step(encoder, mode_config, mesh)
      holder = {"state": mode_step.init(fresh())}
      compiled = mode_step.update.lower(holder["state"], self.batch).compile()
      self.flops[name] = train_step.step_flops(compiled)

      def run_mode(c=compiled, h=holder):
        h["state"], m = c(h["state"], self.batch)
        jax.block_until_ready(m["loss"])
      self.fns[name] = run_mode
    if not components:
      return

    def loss_of(params, b):
      return losses.info_nce(encoder.apply(params, b["query"]), encoder.apply(params, b["passage"]),
                             temperature=TEMPERATURE)[0]

    # The same gradient with the table held constant: what the dense [250k, 384] table
    # gradient (a scatter-add into zeros, then read by the norm and AdamW) costs.
    def loss_no_table(rest, table, b):
      return loss_of(dict(rest, word_embeddings=table), b)
    params = encoder.params
    rest = {k: v for k, v in params.items() if k != "word_embeddings"}
    parts = {
        "jax fwd": (loss_of, (params, self.batch)),
        "jax fwd+bwd": (jax.value_and_grad(loss_of), (params, self.batch)),
        "jax fwd+bwd, no table grad": (jax.value_and_grad(loss_no_table),
                                       (rest, params["word_embeddings"], self.batch)),
    }
    for name, (f, args) in parts.items():
      compiled = jax.jit(f).lower(*args).compile()
      self.flops[name] = train_step.step_flops(compiled)
      self.fns[name] = functools.partial(
          lambda c, args: jax.block_until_ready(c(*args)), compiled, args)

    tx = train_step.make_optimizer(config)
    grads = {"params": jax.jit(jax.grad(loss_of))(params, self.batch),
             "loss_params": {"log_temperature": jnp.float32(0.0)}}

    def opt_update(tr, opt_state, grads):
      updates, opt_state = tx.update(grads, opt_state, tr)
      return optax.apply_updates(tr, updates), opt_state
    trainable = lambda: {"params": self.state["params"],  # noqa: E731
                         "loss_params": self.state["loss_params"]}
    opt_c = jax.jit(opt_update, donate_argnums=(0, 1)).lower(
        trainable(), self.state["opt_state"], grads).compile()
    self.flops["jax AdamW update"] = train_step.step_flops(opt_c)

    def run_opt():
      tr, opt_state = opt_c(trainable(), self.state["opt_state"], grads)
      self.state = dict(self.state, **tr, opt_state=opt_state)
      jax.block_until_ready(opt_state)
    self.fns["jax AdamW update"] = run_opt

  def first_step(self) -> tuple[float, float]:
    """(loss, global grad norm) of one real update from the pretrained weights."""
    self.state, m = self.update(self.state, self.batch)
    return float(m["loss"]), float(m["grad_norm"])


# ------------------------------------------------------------------------------------------------
# The peer: sentence-transformers
# ------------------------------------------------------------------------------------------------

class TorchSide:
  """sentence-transformers MultipleNegativesRankingLoss step on our weights, exported."""

  def __init__(self, encoder, batch: dict, threads: int, compile_: bool, out_dir: str):
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer, util
    try:
      from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 6
      from sentence_transformers import losses
    transformers.logging.set_verbosity_error()  # the unused pooler's "newly initialized" report
    from hybrid_ir import export
    torch.set_num_threads(threads)
    self.torch = torch
    export.export_encoder(encoder, encoder.params, out_dir, provenance="bench_peer")
    model = SentenceTransformer(out_dir, device="cpu")
    # Our encoder has no dropout; switch it off so both sides compute the same function (with
    # ST's default 0.1 the peer would only do more work).
    for m in model.modules():
      if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
    model.train()
    self.params = [p for p in model.parameters() if p.requires_grad]
    # As ours (and HF Trainer): weight decay on matrices only; fused AdamW is the fastest CPU path.
    groups = [{"params": [p for p in self.params if p.ndim >= 2], "weight_decay": 0.01},
              {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0}]
    try:
      self.opt = torch.optim.AdamW(groups, lr=3e-5, fused=True)
      self.fused = True
    except (RuntimeError, TypeError):
      self.opt = torch.optim.AdamW(groups, lr=3e-5)
      self.fused = False
    self.features = [{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch[c].items()}
                     for c in ("query", "passage")]
    self.loss = losses.MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE,
                                                    similarity_fct=util.cos_sim)
    self.fns = {"torch eager step": functools.partial(self.step, self.loss)}
    if compile_:
      # dynamic=False: our two fixed shapes (32 and 64 tokens) each get a static graph.
      compiled = torch.compile(model, dynamic=False)
      self.fns["torch compiled step"] = functools.partial(
          self.step, losses.MultipleNegativesRankingLoss(compiled, scale=1 / TEMPERATURE,
                                                         similarity_fct=util.cos_sim))

  def step(self, loss_module) -> tuple[float, float]:
    loss = loss_module(self.features, None)
    loss.backward()
    norm = self.torch.nn.utils.clip_grad_norm_(self.params, 1.0)
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    return float(loss), float(norm)


# ------------------------------------------------------------------------------------------------
# Probe and encode
# ------------------------------------------------------------------------------------------------

def matmul_probes(m: int = 1024, k: int = 384, n: int = 1536, calls: int = 10):
  """(flops per probe call, {name: fn}): `calls` back-to-back fp32 [m,k]x[k,n] matmuls in XLA and
  torch (several per call so one timing is long enough to read on a busy machine)."""
  import jax
  import jax.numpy as jnp
  import torch
  a = np.random.default_rng(0).standard_normal((m, k), np.float32)
  b = np.random.default_rng(1).standard_normal((k, n), np.float32)
  f, ja, jb = jax.jit(jnp.matmul), jnp.asarray(a), jnp.asarray(b)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)

  def xla():
    for _ in range(calls):
      f(ja, jb).block_until_ready()

  def torch_mm():
    for _ in range(calls):
      torch.mm(ta, tb)
  return 2.0 * m * k * n * calls, {"probe XLA matmul": xla, "probe torch matmul": torch_mm}


def encode_sample(encoder, data_dir: str, sample: int, batch_size: int, seed: int = 0) -> dict:
  """The full evaluation's own batches (every XQuAD-R + MLQA-R question and candidate, sorted by
  token length and cut into `batch_size` rows, as `Encoder.encode` does), a random sample of
  ~`sample` texts' worth of them timed, extrapolated to all of them. Twice, on the same sampled
  batches, interleaved: padded to the encode buckets (what the evaluation does) and to the
  training buckets (what it did before). FLOPs are exact over every batch."""
  import jax
  from hybrid_ir.data import lareqa
  tok = encoder.tokenizer
  cfg = encoder.module(encoder.params).cfg
  settings = {"encode buckets": tok.encode_buckets, "training buckets": tok.buckets}
  # Compile every shape first: the full evaluation compiles each once too, a fixed cost that a
  # sample would overweight.
  for buckets in settings.values():
    tok.encode_buckets = buckets
    for b in buckets:
      encoder.encode(encoder.params, ["x " * (b - 4)], "passage", batch_size, progress=False)
  rng = np.random.default_rng(seed)
  out = {name: dict(buckets=b, seconds=0.0, padded_flops=0.0) for name, b in settings.items()}
  out.update(texts=0, sampled=0, useful_flops=0.0)
  groups = []
  for name in ("xquad-r", "mlqa-r"):
    d = lareqa.load_lareqa(data_dir, name)
    groups += [(f"{name} questions", list(d.question_text), "query"),
               (f"{name} candidates", d.cand_text, "passage")]
  fraction = sample / sum(len(texts) for _, texts, _ in groups)
  for group, texts, kind in groups:
    lengths = np.array([len(x) for x in tok.encode_ids(texts, kind)])
    order = np.argsort(lengths, kind="stable")
    starts = list(range(0, len(texts), batch_size))
    k = max(1, round(len(starts) * fraction))
    picked = sorted(rng.choice(len(starts), min(k, len(starts)), replace=False))
    out["texts"] += len(texts)
    out["sampled"] += sum(len(order[starts[i]:starts[i] + batch_size]) for i in picked)
    out["useful_flops"] += sum(encoder_flops(cfg, int(n)) for n in lengths)
    longest = [int(lengths[order[s:s + batch_size]].max()) for s in starts]
    line = []
    for setting, buckets in settings.items():
      out[setting]["padded_flops"] += sum(
          batch_size * encoder_flops(cfg, tok.bucket_for(n, buckets)) for n in longest)
      tok.encode_buckets = buckets
      t = time.perf_counter()
      for i in picked:
        batch_texts = [texts[j] for j in order[starts[i]:starts[i] + batch_size]]
        encoder.encode(encoder.params, batch_texts, kind, batch_size, progress=False)
      seconds = time.perf_counter() - t
      out[setting]["seconds"] += seconds * len(starts) / len(picked)
      line.append(f"{setting} {seconds:5.1f} s")
    print(f"  {group:22s} {len(picked):3d} of {len(starts):3d} batches: " + ", ".join(line) +
          f"; mean {lengths.mean():.1f} tokens", flush=True)
  tok.encode_buckets = settings["encode buckets"]
  jax.block_until_ready(encoder.params)
  return out


# ------------------------------------------------------------------------------------------------

def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--reps", type=int, default=5, help="interleaved rounds (medians of these)")
  ap.add_argument("--encode_sample", type=int, default=4000,
                  help="about this many texts of XQuAD-R + MLQA-R to encode, in whole "
                  "batches of the full evaluation (0: skip the encode part)")
  ap.add_argument("--encode_batch", type=int, default=64, help="as hybrid_ir.eval's default")
  ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                  help="torch threads (XLA uses every core it sees)")
  ap.add_argument("--no_compile", action="store_true", help="skip torch.compile (saves ~1-2 min)")
  ap.add_argument("--no_components", action="store_true", help="only the two steps and the probe")
  ap.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
  args = ap.parse_args(argv)

  import jax
  import sentence_transformers
  import torch
  from hybrid_ir import models
  t_start = time.perf_counter()
  print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"load average {tuple(round(x, 2) for x in os.getloadavg())}")
  print(f"jax {jax.__version__} ({jax.devices()[0].platform} x{jax.device_count()}), "
        f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}; "
        f"torch threads {args.threads}, oneDNN available {torch.backends.mkldnn.is_available()} "
        f"enabled {torch.backends.mkldnn.enabled}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")

  config = train_config()
  encoder = models.load_encoder(config.model)
  batch = real_batch(encoder, args.data_dir)
  tokens = int(sum(batch[c]["attention_mask"].sum() for c in batch))
  print(f"batch: 32 queries x 32 tokens + 32 passages x 64 (XQuAD-R, {tokens} real tokens of "
        f"{32 * 96}), in-batch negatives, temperature {TEMPERATURE} / scale {1 / TEMPERATURE:g}")

  t = time.perf_counter()
  ours = JaxSide(encoder, config, batch, components=not args.no_components)
  print(f"jax: built and compiled {len(ours.fns)} functions in {time.perf_counter() - t:.0f} s",
        flush=True)
  with tempfile.TemporaryDirectory(prefix="bench_peer_st_") as st_dir:
    peer = TorchSide(encoder, batch, args.threads, not args.no_compile, st_dir)
  print(f"torch: fused AdamW {peer.fused}", flush=True)

  # --- the same first step on both sides
  jl, jn = ours.first_step()
  tl, tn = peer.step(peer.loss)
  ok = abs(jl - tl) <= LOSS_TOLERANCE
  print(f"first step, same weights and batch: loss jax {jl:.6f} torch {tl:.6f} "
        f"(|diff| {abs(jl - tl):.1e}, {'OK' if ok else 'FAIL'} at {LOSS_TOLERANCE:g}); "
        f"grad norm jax {jn:.5f} torch {tn:.5f} (rel diff {abs(jn - tn) / tn:.1e})", flush=True)

  probe_flops, probes = matmul_probes()
  fns = {**probes, **ours.fns, **peer.fns}
  t = time.perf_counter()
  print(f"\ntiming {len(fns)} functions, {args.reps} interleaved rounds after 2 warm-up calls "
        f"each (torch.compile compiles in its first)", flush=True)
  times = interleaved(fns, args.reps)
  med = {k: float(np.median(v)) for k, v in times.items()}
  print(f"timed in {time.perf_counter() - t:.0f} s")

  xla_rate = probe_flops / med["probe XLA matmul"]
  torch_rate = probe_flops / med["probe torch matmul"]
  print(f"\nmatmul probe 1024x384x1536 fp32 (median): XLA {xla_rate / 1e9:.0f} GFLOP/s, "
        f"torch {torch_rate / 1e9:.0f} GFLOP/s")

  torch_names = [k for k in peer.fns]
  best = min(torch_names, key=med.get)
  ratio = med["jax step"] / med[best]
  print("\n== train step vs sentence-transformers (median s/step) ==")
  for k in ["jax step"] + torch_names:
    print(f"  {k:22s} {med[k]:6.2f} s   ({32 / med[k]:5.1f} examples/s, "
          f"{ours.flops['jax step'] / med[k] / 1e9:5.0f} GFLOP/s)")
  print(f"JAX/PyTorch step-time ratio: {ratio:.2f} against the peer's best ({best}); "
        f"target <= 0.8: {'met' if ratio <= 0.8 else 'MISSED'}")
  print(f"  per round: " + " ".join(f"{a / b:.2f}" for a, b in zip(times["jax step"], times[best])))
  # No XLA program of these FLOPs runs faster than its matmuls at the probe's rate, so this ratio
  # says whether the target is reachable on this CPU at all, whatever the step's efficiency.
  floor = ours.flops["jax step"] / xla_rate
  print(f"floor: the step's {ours.flops['jax step'] / 1e9:.0f} GFLOP at XLA's probe rate take "
        f"{floor:.2f} s = ratio {floor / med[best]:.2f}; the 0.8 target needs the step at "
        f"{floor / (0.8 * med[best]):.0%} of the probe"
        + ("" if floor <= 0.8 * med[best] else ": out of reach of any XLA program on this CPU"))

  print("\n== where the step's time goes (median; FLOPs from XLA's cost analysis) ==")
  print(f"  {'part':28s} {'s':>6s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'of XLA probe':>12s}")
  for k in ours.fns:
    f = ours.flops[k]
    print(f"  {k:28s} {med[k]:6.2f} {f / 1e9:7.1f} {f / med[k] / 1e9:8.0f} "
          f"{f / med[k] / xla_rate:11.0%}")
  if "jax fwd+bwd" in med:
    rest = med["jax step"] - med["jax fwd+bwd"] - med["jax AdamW update"]
    print(f"  table gradient (fwd+bwd minus fwd+bwd without it): "
          f"{med['jax fwd+bwd'] - med['jax fwd+bwd, no table grad']:.2f} s; step minus fwd+bwd "
          f"minus AdamW (norms, finite check, select): {rest:.2f} s")
  share = ours.flops["jax step"] / med["jax step"] / xla_rate
  print(f"e5-small train step: {share:.0%} of XLA's matmul probe; target >= 60%: "
        f"{'met' if share >= 0.6 else 'MISSED'}")
  # The dense step's FLOPs are the model's work; the lazy step does that work in less time (and
  # its own count drops the dense table gradient and update, which are not model work).
  lazy = med["jax step, table lazy"]
  lazy_share = ours.flops["jax step"] / lazy / xla_rate
  print(f"lazy table update (optimizer.embedding_update=lazy; not exact AdamW, mAP effect in the "
        f"README): {lazy:.2f} s = {lazy / med['jax step']:.2f}x the dense step; the dense step's "
        f"FLOPs in its time: {lazy_share:.0%} of the probe (target >= 60%: "
        f"{'met' if lazy_share >= 0.6 else 'MISSED'}); JAX/PyTorch ratio {lazy / med[best]:.2f} "
        f"(target <= 0.8: {'met' if lazy / med[best] <= 0.8 else 'MISSED'})")
  del ours, peer, fns

  if args.encode_sample:
    print(f"\n== evaluation encode, XQuAD-R + MLQA-R, sample of {args.encode_sample} texts, "
          f"batch {args.encode_batch} ==", flush=True)
    e = encode_sample(encoder, args.data_dir, args.encode_sample, args.encode_batch)
    limit = e["useful_flops"] / xla_rate
    print(f"all {e['texts']} texts (extrapolated from {e['sampled']} in whole batches): useful "
          f"{e['useful_flops'] / 1e12:.2f} TFLOP (real tokens) -> FLOP-limit time at the probe's "
          f"{xla_rate / 1e9:.0f} GFLOP/s {limit:.0f} s")
    for setting in ("training buckets", "encode buckets"):
      x = e[setting]
      print(f"  {setting:16s} {x['buckets']}: "
            f"{x['seconds']:5.0f} s, {x['padded_flops'] / e['useful_flops']:.2f}x the useful FLOPs, "
            f"{x['padded_flops'] / x['seconds'] / 1e9:.0f} GFLOP/s = "
            f"{x['padded_flops'] / x['seconds'] / xla_rate:.0%} of the probe; "
            f"{x['seconds'] / limit:.2f}x the FLOP-limit time")
    r = e["encode buckets"]["seconds"] / limit
    print(f"encode buckets vs training buckets, same batches: time ratio "
          f"{e['encode buckets']['seconds'] / e['training buckets']['seconds']:.2f}")
    print(f"encode time / FLOP-limit time: {r:.2f}x; target within 1.3x: "
          f"{'met' if r <= 1.3 else 'MISSED'}")
  print(f"\nload average at end {tuple(round(x, 2) for x in os.getloadavg())}; "
        f"total {time.perf_counter() - t_start:.0f} s")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
