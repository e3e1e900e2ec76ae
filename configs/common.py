"""Pieces shared by the configs: where the data lives, model presets, evaluator presets."""
import os
import pathlib

import ml_collections

# ../shared/data next to the checkout, unless HYBRID_IR_DATA says otherwise.
DATA_DIR = os.environ.get(
    "HYBRID_IR_DATA", str(pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))

from hybrid_ir.data import DEFAULT_STORE_DIR as STORE_DIR  # noqa: E402  (prepared stores)
from hybrid_ir.data.lareqa import LANGS as LAREQA_LANGS  # noqa: E402
from hybrid_ir.lsar import DEFAULTS as LSAR_OFF  # noqa: E402
from hybrid_ir.models import PRESETS as MODEL_PRESETS  # noqa: E402


# Random BERTs (with the e5 tokenizer) of two real models' shapes, for throughput benchmarks where
# the bundled weights are not installed (bench_train.py on an accelerator): a step's FLOPs and time
# do not depend on the weights' values. xlmr-base-shape has XLM-R base's 278M parameters (the
# paper's XLM-R: size unstated, probably base).
SHAPES = {
    "e5-small-shape": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=1536, max_position_embeddings=512),
    "xlmr-base-shape": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=514,
                            type_vocab_size=1, position_offset=2),
}


def model(name: str) -> ml_collections.ConfigDict:
  """Model presets. e5 was trained with lower-case 'query: '/'passage: ' prefixes; the paper's
  prefixes are 'Query: '/'Passage: ' — set them in a config to follow the paper literally.
  Each has `lsar` (language-subspace removal at encode time, `hybrid_ir.lsar`), off (rank 0):
  e.g. --config.model.lsar.rank=2 --config.model.lsar.source=xquad-r."""
  config = _model(name)
  config.lsar = dict(LSAR_OFF)
  return config


def _model(name: str) -> ml_collections.ConfigDict:
  if name in MODEL_PRESETS:  # e5-small, use-m3: the models registry's own presets
    return ml_collections.ConfigDict(dict(MODEL_PRESETS[name]))
  if name == "mini":  # a tiny random BERT with the e5 tokenizer: smoke tests in seconds
    return ml_collections.ConfigDict(dict(
        name="random_init", pooling="mean", dtype="float32", buckets=(64,), query_prefix="",
        passage_prefix="", random_init=dict(hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=64,
                                            max_position_embeddings=64)))
  if name in SHAPES:
    return ml_collections.ConfigDict(dict(
        name="random_init", pooling="mean", dtype="float32", buckets=(16, 32, 64, 128),
        query_prefix="", passage_prefix="", random_init=dict(SHAPES[name])))
  raise ValueError(f"unknown model preset {name!r}; known: "
                   f"{', '.join([*MODEL_PRESETS, 'mini', *SHAPES])}")


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
  positives ('standard'; 'paper' = as printed), fixed temperature (unstated in the paper), and
  the safety net that masks any in-batch or hard negative sharing a passage identity with a
  query's positive (the sampler already keeps them out of a batch). temperature_lr: the learned
  temperature's own peak learning rate (0: the encoder's)."""
  return dict(dict(variant="standard", temperature=0.05, learn_temperature=False,
                   temperature_lr=0.0, symmetric=False,
                   mask_false_negatives=True), **overrides)
