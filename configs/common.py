"""Pieces shared by the configs: where the data lives, model presets, evaluator presets."""
import os
import pathlib

import ml_collections

# ../shared/data next to the checkout, unless HYBRID_IR_DATA says otherwise.
DATA_DIR = os.environ.get(
    "HYBRID_IR_DATA", str(pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))

LAREQA_LANGS = {
    "xquad-r": ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
    "mlqa-r": ("ar", "de", "en", "es", "hi", "vi", "zh"),
}


def model(name: str) -> ml_collections.ConfigDict:
  """Model presets. e5 was trained with lower-case 'query: '/'passage: ' prefixes; the paper's
  prefixes are 'Query: '/'Passage: ' — set them in a config to follow the paper literally."""
  if name == "e5-small":
    return ml_collections.ConfigDict(dict(
        name="bundled:e5-small", pooling="mean", dtype="float32",
        query_prefix="query: ", passage_prefix="passage: ", buckets=(16, 32, 64, 128)))
  if name == "use-m3":
    return ml_collections.ConfigDict(dict(
        name="bundled:use-m3", pooling="mean", dtype="float32",
        query_prefix="", passage_prefix="", buckets=(16, 32, 64, 128)))
  raise ValueError(f"unknown model preset {name!r}; known: e5-small, use-m3")


def lareqa_evals(*names: str, langs=None, candidate_text: str = "sentence"
                 ) -> ml_collections.ConfigDict:
  """Evaluator configs for LAReQA sets ('xquad-r', 'mlqa-r'), keyed by eval name."""
  evals = ml_collections.ConfigDict()
  for n in names:
    evals[n] = ml_collections.ConfigDict(dict(
        type="lareqa", dataset=n, data_dir=DATA_DIR, langs=langs,
        candidate_text=candidate_text))
  return evals


def loss(**overrides) -> dict:
  """InfoNCE defaults shared by the training configs: in-batch negatives incl. the other queries'
  positives ('standard'; 'paper' = as printed), fixed temperature (unstated in the paper),
  translations of the same item masked as negatives, no auxiliary MSE."""
  return dict(dict(variant="standard", temperature=0.05, learn_temperature=False, symmetric=False,
                   mask_groups=True, mse_weight=0.0), **overrides)
