"""One training run of an experiment: hybrid-batch fine-tuning on one LAReQA set, zero-shot
evaluation on the other. `python -m hybrid_ir.experiments <name>` runs a grid of these; one run is

  python -m hybrid_ir.train --config 'configs/experiments/base.py:train=xquad-r,mono=0.5,cross=0.5' \
      --workdir workdirs/x
  python -m hybrid_ir.eval  --config 'configs/experiments/base.py:train=xquad-r,mono=0.5,cross=0.5' \
      --workdir workdirs/x --once

The arg is comma-separated key=value pairs (defaults in DEFAULTS):
  model   use-m3 | e5-small
  train   xquad-r | mlqa-r   (evaluation is on the other set; never on the training set)
  mono, cross, mixed         batch-type probabilities (paper hybrid: mono=0.5, cross=0.5)
  langs   training languages joined by '+', or 'all' (all the model covers, see below)
  steps, batch, lr, seed
  size    full | mini        (mini: a tiny random BERT and 2 eval languages, for tests)
USE-m3 was never trained on el, hi, vi: with model=use-m3, 'all' leaves them out of training.
"""
import ml_collections

from configs import common
from hybrid_ir import models

DEFAULTS = dict(model="use-m3", train="xquad-r", mono=0.5, cross=0.5, mixed=0.0, langs="all",
                steps=150, batch=32, lr=3e-5, seed=0, size="full")
MODELS = ("use-m3", "e5-small")


def parse(arg: str | None) -> dict:
  """'k=v,k=v' -> DEFAULTS updated, with each value converted to its default's type."""
  out = dict(DEFAULTS)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in DEFAULTS:
      raise ValueError(f"config arg {item!r}: expected key=value with key in {sorted(DEFAULTS)}")
    out[key] = type(DEFAULTS[key])(value)
  if out["train"] not in common.LAREQA_LANGS:
    raise ValueError(f"train={out['train']!r}; known: {sorted(common.LAREQA_LANGS)}")
  if out["model"] not in MODELS:
    raise ValueError(f"model={out['model']!r}; known: {MODELS}")
  return out


def train_langs(a: dict) -> tuple[str, ...]:
  available = common.LAREQA_LANGS[a["train"]]
  if a["langs"] == "all":
    uncovered = models.UNCOVERED_LANGS.get(common.model(a["model"]).name, ())
    return tuple(l for l in available if l not in uncovered)
  langs = tuple(a["langs"].split("+"))
  unknown = [l for l in langs if l not in available]
  if unknown:
    raise ValueError(f"langs {unknown} are not in {a['train']}; available: {available}")
  return langs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse(arg)
  evaluate_on = "mlqa-r" if a["train"] == "xquad-r" else "xquad-r"
  c = ml_collections.ConfigDict()
  c.seed = a["seed"]
  c.total_steps = a["steps"]
  c.log_every = max(1, min(10, a["steps"] // 10))
  c.eval_every = 0
  c.eval_batch_size = 128
  c.grad_cache_chunks = 0
  c.mesh = dict(data=-1, fsdp=1)
  c.model = common.model(a["model"])
  c.optimizer = dict(lr=a["lr"], weight_decay=0.01, warmup_steps=max(1, a["steps"] // 10),
                     decay="linear", grad_clip=1.0)
  c.loss = common.loss()
  c.checkpoint = dict(every=a["steps"], keep=1, async_save=True)
  c.input = dict(batch_size=a["batch"], seed=a["seed"], num_negatives=0, prefetch=2,
                 too_few="error", type_probs=dict(mono=a["mono"], cross=a["cross"], mixed=a["mixed"]),
                 sources=[dict(name=a["train"], kind="squad", path=f"{common.DATA_DIR}/{a['train']}",
                               langs=train_langs(a))])
  c.evals = common.lareqa_evals(evaluate_on)
  if a["size"] == "mini":
    # A tiny random BERT with the e5 tokenizer: for the experiment tests, seconds per run.
    c.model = ml_collections.ConfigDict(dict(
        name="random_init", pooling="mean", dtype="float32", buckets=(64,), query_prefix="",
        passage_prefix="", random_init=dict(hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=64,
                                            max_position_embeddings=64)))
    c.eval_batch_size = 256
    c.evals = common.lareqa_evals(evaluate_on, langs=("de", "en", "zh"))
  elif a["size"] != "full":
    raise ValueError(f"size={a['size']!r}; known: full, mini")
  return c
