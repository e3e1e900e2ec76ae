"""hybrid_ir.models, the models registry: family() resolves each kind of model name, the
uncovered languages of the bundled models, the presets load through the registry with their
prefixes and buckets, a random_init BERT is deterministic in its seed, bad names and configs are
refused by name, and importing the registry loads no jax. Offline: only bundled weights."""
import subprocess
import sys

import jax
import numpy as np
import pytest

from hybrid_ir import models
from hybrid_ir.models import encoder as encoder_lib

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)


def test_family_resolves_each_kind_of_name():
  assert models.family("bundled:e5-small") == ("bundled", models.BUNDLED["bundled:e5-small"])
  assert models.family("bundled:use-m3") == ("bundled", models.BUNDLED["bundled:use-m3"])
  assert models.family("random_init") == ("random_init", None)
  assert models.family("hf:sentence-transformers/LaBSE") == ("hf", None)
  assert models.family("/some/snapshot") == ("path", None)
  assert models.family("bundled-looking/dir") == ("path", None)
  with pytest.raises(ValueError, match=r"unknown bundled model 'bundled:labse'; have "
                                       r"'bundled:e5-small', 'bundled:use-m3'"):
    models.family("bundled:labse")


def test_uncovered_languages_are_use_m3s_and_no_one_elses():
  assert models.uncovered_langs("bundled:use-m3") == ("el", "hi", "vi")
  for name in ("bundled:e5-small", "random_init", "hf:xlm-roberta-base", "/a/dir"):
    assert models.uncovered_langs(name) == ()
  assert models.UNCOVERED_LANGS == {"bundled:use-m3": ("el", "hi", "vi")}
  assert models.BUNDLED["bundled:e5-small"].is_e5 and not models.BUNDLED["bundled:use-m3"].is_e5


@pytest.mark.parametrize("short", sorted(models.PRESETS))
def test_each_preset_is_a_bundled_model_that_loads_with_its_settings(short):
  preset = models.PRESETS[short]
  assert models.family(preset["name"])[0] == "bundled"
  enc = models.load_encoder(preset)
  assert isinstance(enc, encoder_lib.Encoder) and enc.name == preset["name"]
  assert enc.tokenizer.prefixes == {"query": preset["query_prefix"],
                                    "passage": preset["passage_prefix"]}
  assert enc.tokenizer.buckets == preset["buckets"]
  v = enc.encode(enc.params, ["hello world", "hallo Welt"], "query", progress=False)
  assert v.shape[0] == 2 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_e5_prefixes_default_by_family_and_none_means_the_default():
  e5 = models.load_encoder({"name": "bundled:e5-small", "query_prefix": None})
  assert e5.tokenizer.prefixes == {"query": "query: ", "passage": "passage: "}
  def tiny(pooling):
    return models.load_encoder({"name": "random_init", "random_init": TINY, "pooling": pooling})
  default, mean, cls = tiny(None), tiny("mean"), tiny("cls")
  assert default.tokenizer.prefixes == {"query": "", "passage": ""}
  assert default.name == "random_init"
  texts = ["one text", "another longer text here"]
  embed = lambda enc: enc.encode(enc.params, texts, "passage", progress=False)  # noqa: E731
  np.testing.assert_array_equal(embed(default), embed(mean))  # pooling None: the default, mean
  assert not np.allclose(embed(cls), embed(mean))


def test_random_init_is_deterministic_in_its_seed():
  def params(seed):
    enc = models.load_encoder({"name": "random_init", "random_init": TINY, "seed": seed})
    return jax.tree.leaves(enc.params)
  a, again, other = params(0), params(0), params(1)
  assert len(a) == len(again) == len(other) > 0
  for x, y in zip(a, again):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(a, other))


def test_bad_model_configs_are_named():
  with pytest.raises(ValueError, match=r"model_config\.name is required \(e\.g\. "
                                       r"'bundled:e5-small'\)"):
    models.load_encoder({"pooling": "mean"})
  with pytest.raises(ValueError, match=r"model_config\.name='random_init' needs "
                                       r"model_config\.random_init"):
    models.load_encoder({"name": "random_init"})
  with pytest.raises(FileNotFoundError, match=r"model_config\.name='/no/such/dir' is neither"):
    models.load_encoder({"name": "/no/such/dir"})
  with pytest.raises(AttributeError, match="has no attribute 'Decoder'"):
    models.Decoder  # noqa: B018
  assert models.Encoder is encoder_lib.Encoder and models.BertConfig is encoder_lib.BertConfig


def test_importing_the_registry_loads_no_jax():
  code = ("import sys; from hybrid_ir import models; models.family('bundled:e5-small'); "
          "models.PRESETS; print(sorted(m for m in ('jax', 'flax', 'tensorflow') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr
