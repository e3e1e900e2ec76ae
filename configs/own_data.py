"""Fine-tune on your own data: hybrid batches over the files the arg names.

  python -m hybrid_ir.train  --config 'configs/own_data.py:jsonl=my/en.jsonl+my/de.jsonl+my/es.jsonl' \
      --workdir workdirs/mine
  python -m hybrid_ir.search --config 'configs/own_data.py:jsonl=...' --workdir workdirs/mine \
      --corpus my/corpus.jsonl --queries my/queries.tsv [--qrels my/qrels.txt]
  python -m hybrid_ir.export --config 'configs/own_data.py:jsonl=...' --workdir workdirs/mine --out exported/
  python -m hybrid_ir.eval   --config 'configs/own_data.py:jsonl=...' --workdir workdirs/mine --once  # MLQA-R

The arg is comma-separated key=value pairs; exactly one of the data keys:
  jsonl=a.jsonl+b.jsonl   JSONL records (README "Training data": group_id, lang, query, positive,
                          optional negatives, positive_id)
  mmarco=DIR              DIR/collections/<lang>.tsv, DIR/queries/<lang>.tsv, DIR/triples.tsv
  bitext=a.tsv.gz+...     id<TAB>lang<TAB>text with a header; same id = translations
and optionally: model (e5-small | use-m3 | mini: a tiny random BERT for smoke tests; default
e5-small, which `export` can write for sentence-transformers; USE-m3 it cannot), steps (100),
batch (32), lr (3e-5), mono / cross (batch-type probabilities, default 0.5 / 0.5: the paper's
hybrid; data in one language has no X-Y pairs, so give mono=1,cross=0), negatives (hard
negatives per example from your records, default 0), seed (0).
Runtime on a 2-core CPU with e5-small: ~2.4 s per step at batch 32.
"""
import glob
import os
import zlib

import ml_collections

from configs import common
from hybrid_ir import config_flags

DATA_KEYS = ("jsonl", "mmarco", "bitext")
DEFAULTS = dict(model="e5-small", steps=100, batch=32, lr=3e-5, mono=0.5, cross=0.5, negatives=0,
                seed=0)


def parse(arg: str | None) -> dict:
  out = config_flags.parse_arg(arg, DEFAULTS, where="configs/own_data.py arg", text_keys=DATA_KEYS)
  data = [k for k in DATA_KEYS if k in out]
  if len(data) != 1:
    raise ValueError(f"configs/own_data.py: give exactly one of {DATA_KEYS} (e.g. "
                     f"'configs/own_data.py:jsonl=train.jsonl'); got {data or 'none'}")
  return out


def source(a: dict) -> dict:
  # Named by its files, so that another dataset gets a store of its own.
  key = next(k for k in DATA_KEYS if k in a)
  name = f"own-{key}-{zlib.crc32(a[key].encode()):08x}"
  if "jsonl" in a:
    return dict(name=name, kind="jsonl", paths=a["jsonl"].split("+"), num_negatives=a["negatives"])
  if "bitext" in a:
    return dict(name=name, kind="bitext", paths=a["bitext"].split("+"))
  folder = a["mmarco"]
  langs = sorted(os.path.basename(p)[:-4] for p in glob.glob(f"{folder}/collections/*.tsv"))
  if not langs:
    raise ValueError(f"configs/own_data.py: no {folder}/collections/<lang>.tsv files")
  return dict(name=name, kind="mmarco", num_negatives=a["negatives"],
              collections={l: f"{folder}/collections/{l}.tsv" for l in langs},
              queries={l: f"{folder}/queries/{l}.tsv" for l in langs},
              triples=f"{folder}/triples.tsv")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse(arg)
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
                     decay="linear", grad_clip=1.0, embedding_update="dense")
  c.loss = common.loss()
  c.checkpoint = dict(every=max(1, a["steps"] // 2), keep=2, async_save=True)
  c.input = dict(batch_size=a["batch"], seed=a["seed"], prefetch=2, too_few="drop", packing=False,
                 store_dir=common.STORE_DIR,
                 type_probs=dict(mono=a["mono"], cross=a["cross"], mixed=0.0),
                 sources=[source(a)])
  c.evals = common.lareqa_evals("mlqa-r")
  return c
