"""The paper's LaBSE runs: configs/paper/xlmr_hybrid.py with LaBSE (pooled CLS) instead of XLM-R.

  python -m hybrid_ir.train --config configs/paper/labse_hybrid.py[:mono|:cross] --workdir W
"""
from configs.paper import xlmr_hybrid


def get_config(arg=None):
  return xlmr_hybrid.get_config(arg, model="hf:sentence-transformers/LaBSE", pooling="pooler")
