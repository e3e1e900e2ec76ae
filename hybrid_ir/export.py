"""Exports an encoder - a training checkpoint, or the config's pretrained model - for serving, as a
sentence-transformers / HF directory that PyTorch users load with the tools they already have.

  python -m hybrid_ir.export --config configs/e5_small.py --workdir W [--step N] --out OUT
  python -m hybrid_ir.export --config configs/e5_small.py --pretrained --out OUT

  # then, in PyTorch (no hybrid_ir needed):
  model = sentence_transformers.SentenceTransformer(OUT)
  q = model.encode(queries, prompt_name="query"); p = model.encode(passages, prompt_name="passage")

What is written (the classic sentence-transformers layout, which sentence-transformers 2.x-6.x load;
`transformers.AutoModel` / `AutoTokenizer` also load OUT on their own):
  model.safetensors, config.json   HF `BertModel` (e5, LaBSE, mBERT: position ids from 0) or
                                   `XLMRobertaModel` (position ids from padding_idx + 1), float32,
                                   tensor names from `weights.hf_name_map` (the import map, inverted)
  tokenizer.json, tokenizer_config.json, special_tokens_map.json   the encoder's own tokenizer
  modules.json                     Transformer -> Pooling -> [Dense] -> Normalize
  sentence_bert_config.json        max_seq_length = the largest bucket (longer texts are truncated,
                                   as our tokenizer does)
  1_Pooling/config.json            pooling 'mean' -> mean over tokens incl. the prompt; 'cls' -> [CLS]
  2_Dense/                         pooling 'pooler' only (LaBSE): CLS pooling + a Dense layer holding
                                   the pooler's weights with tanh, exactly how LaBSE ships in
                                   sentence-transformers (the pooler is also in model.safetensors)
  N_Normalize/                     L2 normalisation, as our `Encoder.apply`
  config_sentence_transformers.json   prompts {'query': query_prefix, 'passage': passage_prefix}

Related: `hybrid_ir.checkpoint.restore_params` (what is read), `hybrid_ir.models.weights` (import).
USE-m3 is not a HF architecture (DAN + CNN n-gram encoder), so exporting it raises; serve it with
`hybrid_ir.models.load_encoder` + the checkpoint's params instead.
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import numpy as np

# Special tokens by tokenizer family: XLM-R / e5 sentencepiece vocabularies, then BERT WordPiece.
_SPECIAL_TOKENS = (
    dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
         pad_token="<pad>", cls_token="<s>", mask_token="<mask>"),
    dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
         mask_token="[MASK]"),
)


def hf_tensors(cfg, params: Any) -> dict[str, np.ndarray]:
  """Our BERT params -> {HF tensor name: float32 numpy}, by inverting `weights.hf_name_map`.

  Inputs: cfg, the encoder's `BertConfig`; params, its params pytree (jax or numpy arrays,
  sharded arrays are gathered). Raises ValueError listing leaves the map does not cover, so a
  model change can never silently drop a tensor from the export.
  """
  from hybrid_ir.models import weights
  import jax
  flat = {tuple(k.key for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  out, used = {}, set()
  for hf_name, (dest, transpose) in weights.hf_name_map(cfg).items():
    if dest not in flat:
      raise ValueError(f"export: params have no {'/'.join(dest)} (wanted for {hf_name})")
    v = np.asarray(jax.device_get(flat[dest]), np.float32)
    out[hf_name] = np.ascontiguousarray(v.T if transpose else v)
    used.add(dest)
  unmapped = sorted("/".join(k) for k in set(flat) - used)
  if unmapped:
    raise ValueError(f"export: params not covered by weights.hf_name_map: {unmapped}")
  return out


def hf_config(cfg, pad_token_id: int) -> dict[str, Any]:
  """config.json for HF `BertModel` (position_offset 0) or `XLMRobertaModel` (offset pad + 1)."""
  xlmr = cfg.position_offset != 0
  if xlmr:
    # XLM-R derives position ids from padding_idx: they start at pad_token_id + 1.
    pad_token_id = cfg.position_offset - 1
  c = {
      "architectures": ["XLMRobertaModel" if xlmr else "BertModel"],
      "model_type": "xlm-roberta" if xlmr else "bert",
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
      "num_hidden_layers": cfg.num_hidden_layers,
      "num_attention_heads": cfg.num_attention_heads,
      "intermediate_size": cfg.intermediate_size,
      "max_position_embeddings": cfg.max_position_embeddings,
      "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
      "hidden_act": "gelu",  # HF 'gelu' is the exact erf GELU, as ours.
      "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
      "initializer_range": 0.02, "position_embedding_type": "absolute",
      "pad_token_id": int(pad_token_id), "torch_dtype": "float32",
  }
  if xlmr:
    c.update(bos_token_id=0, eos_token_id=2)
  return c


def write_tokenizer(tokenizer, out_dir: pathlib.Path) -> dict[str, str]:
  """Writes tokenizer.json (+ tokenizer_config.json, special_tokens_map.json); returns the specials.

  Inputs: an `HFTokenizer` (its `tokenizers.Tokenizer` is saved with truncation/padding cleared;
  the serving side sets them per call). tokenizer_class is the generic 'PreTrainedTokenizerFast',
  which every transformers version since v3 maps onto tokenizer.json.
  """
  import tokenizers
  from hybrid_ir.models import tokenizers as tokenizers_lib
  if not isinstance(tokenizer, tokenizers_lib.HFTokenizer):
    raise ValueError(f"export: tokenizer {type(tokenizer).__name__} is not a HF tokenizer")
  tok = tokenizers.Tokenizer.from_str(tokenizer.tokenizer.to_str())
  tok.no_truncation()
  tok.no_padding()
  tok.save(str(out_dir / "tokenizer.json"))
  specials = {}
  for family in _SPECIAL_TOKENS:
    present = {k: v for k, v in family.items() if tok.token_to_id(v) is not None}
    if "pad_token" in present:
      specials = present
      break
  if tok.id_to_token(tokenizer.pad_id) != specials.get("pad_token"):
    raise ValueError(f"export: tokenizer {tokenizer.name!r} pads with id {tokenizer.pad_id} "
                     f"({tok.id_to_token(tokenizer.pad_id)!r}); no known pad token found among "
                     f"{[f['pad_token'] for f in _SPECIAL_TOKENS]}")
  _write_json(out_dir / "special_tokens_map.json", specials)
  _write_json(out_dir / "tokenizer_config.json", {
      "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": tokenizer.max_len,
      "clean_up_tokenization_spaces": False, **specials})
  return specials


def export_encoder(encoder, params: Any, out_dir: str | pathlib.Path, *,
                   provenance: str = "") -> pathlib.Path:
  """Writes `encoder` with `params` as a sentence-transformers directory (see module docstring).

  Inputs: encoder, a BERT-family `hybrid_ir.models.Encoder`; params, its params pytree (e.g. from
  `checkpoint.restore_params`); out_dir, created if missing (must be empty if it exists);
  provenance, one line for the README. Returns out_dir. Raises ValueError for non-BERT encoders.
  """
  import safetensors.numpy
  from hybrid_ir.models import encoder as encoder_lib
  module = encoder.module(encoder.params)
  if not isinstance(module, encoder_lib.BertModel):
    raise ValueError(
        f"export: {encoder.name!r} is a {type(module).__name__}, not a BERT / XLM-R encoder; only "
        "those map onto a HF architecture (USE-m3's DAN + CNN network has none). Serve it with "
        "hybrid_ir.models.load_encoder + checkpoint.restore_params instead.")
  cfg = module.cfg
  out = pathlib.Path(out_dir)
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"export: output directory {out} is not empty; pass an empty or new "
                          "directory (or --overwrite)")
  out.mkdir(parents=True, exist_ok=True)

  tensors = hf_tensors(cfg, params)
  safetensors.numpy.save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
  tok = encoder.tokenizer
  _write_json(out / "config.json", hf_config(cfg, tok.pad_id))
  write_tokenizer(tok, out)

  h = cfg.hidden_size
  modules = [("sentence_transformers.models.Transformer", "")]
  modules.append(("sentence_transformers.models.Pooling", "1_Pooling"))
  _write_json(out / "1_Pooling" / "config.json", {
      "word_embedding_dimension": h, "pooling_mode_cls_token": cfg.pooling != "mean",
      "pooling_mode_mean_tokens": cfg.pooling == "mean", "pooling_mode_max_tokens": False,
      "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True})
  if cfg.pooling == "pooler":
    # sentence-transformers has no pooler module; LaBSE's own export is CLS + Dense(tanh).
    d = out / f"{len(modules)}_Dense"
    _write_json(d / "config.json", {"in_features": h, "out_features": h, "bias": True,
                                    "activation_function": "torch.nn.modules.activation.Tanh"})
    safetensors.numpy.save_file({"linear.weight": tensors["pooler.dense.weight"],
                                 "linear.bias": tensors["pooler.dense.bias"]},
                                str(d / "model.safetensors"), metadata={"format": "pt"})
    modules.append(("sentence_transformers.models.Dense", d.name))
  norm = out / f"{len(modules)}_Normalize"
  norm.mkdir()
  modules.append(("sentence_transformers.models.Normalize", norm.name))
  _write_json(out / "modules.json", [
      {"idx": i, "name": str(i), "path": path, "type": typ}
      for i, (typ, path) in enumerate(modules)])
  _write_json(out / "sentence_bert_config.json",
              {"max_seq_length": tok.max_len, "do_lower_case": False})
  _write_json(out / "config_sentence_transformers.json", {
      "prompts": dict(tok.prefixes), "default_prompt_name": None,
      "similarity_fn_name": "cosine"})
  (out / "README.md").write_text(
      f"# {encoder.name} (exported by hybrid_ir)\n\n{provenance}\n\n"
      "```python\nfrom sentence_transformers import SentenceTransformer\n"
      f"model = SentenceTransformer({str(out)!r})\n"
      'q = model.encode(["..."], prompt_name="query")\n'
      'p = model.encode(["..."], prompt_name="passage")\n```\n\n'
      f"Pooling: {cfg.pooling}; max_seq_length {tok.max_len}; prompts {dict(tok.prefixes)}.\n")
  logging.info("exported %s (%d tensors, pooling %s) to %s", encoder.name, len(tensors),
               cfg.pooling, out)
  return out


def export(config, out_dir: str | pathlib.Path, *, workdir: str | pathlib.Path | None = None,
           step: int | None = None, pretrained: bool = False) -> pathlib.Path:
  """Loads `config.model`, takes params from `workdir`'s checkpoint `step` (None: the latest
  finished one) or, with `pretrained=True`, as loaded, and exports them (`export_encoder`).

  Recommended after `hybrid_ir.train` on the same config. Raises ValueError for a USE-m3 config
  (before loading anything) and FileNotFoundError naming the finished steps for a missing step.
  """
  from hybrid_ir import checkpoint
  from hybrid_ir import models
  name = config.model.get("name")
  if pretrained == (workdir is not None):
    raise ValueError("export: give exactly one of workdir (a checkpoint) or pretrained=True; got "
                     f"workdir={workdir!r}, pretrained={pretrained}")
  if name == "bundled:use-m3":
    raise ValueError("export: 'bundled:use-m3' (DAN + CNN) is not a HF / sentence-transformers "
                     "architecture and cannot be exported; serve it with "
                     "hybrid_ir.models.load_encoder + checkpoint.restore_params, or train a "
                     "BERT-family model (e.g. configs/e5_small.py) to export")
  encoder = models.load_encoder(config.model)
  if pretrained:
    params, provenance = encoder.params, f"Pretrained `{name}`, not fine-tuned."
  else:
    step = checkpoint.latest_finished_step(workdir) if step is None else step
    params = checkpoint.restore_params(workdir, step, checkpoint.abstract(encoder.params))
    provenance = f"`{name}` fine-tuned: checkpoint step {step} of `{workdir}`."
  return export_encoder(encoder, params, out_dir, provenance=provenance)


def _write_json(path: pathlib.Path, obj: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def main(argv) -> None:
  import shutil
  from absl import app
  del argv
  out = pathlib.Path(_OUT.value)
  if _PRETRAINED.value == bool(_WORKDIR.value):
    raise app.UsageError("give exactly one of --workdir (export a checkpoint) or --pretrained")
  if _OVERWRITE.value and out.is_dir() and any(out.iterdir()):
    # Only ever delete a previous export, never an arbitrary directory given by mistake.
    if not (out / "modules.json").is_file():
      raise app.UsageError(f"--overwrite: {out} does not look like an export (no modules.json); "
                           "not deleting it")
    shutil.rmtree(out)
  export(_CONFIG.value, out, workdir=_WORKDIR.value or None, step=_STEP.value,
         pretrained=_PRETRAINED.value)
  print(f"exported to {out}", flush=True)


if __name__ == "__main__":
  # Flags live here, not at import time, so `hybrid_ir.export` can be imported next to
  # hybrid_ir.train / eval (notebook, tests), which define --config and --workdir too.
  from absl import flags
  from hybrid_ir import config_flags
  _CONFIG = config_flags.define_config()
  _WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir whose checkpoint is exported.")
  _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest finished).")
  _PRETRAINED = flags.DEFINE_bool("pretrained", False, "Export the config's model untrained.")
  _OUT = flags.DEFINE_string("out", None, "Output directory (new or empty).", required=True)
  _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete --out first if it exists.")
  config_flags.run(main)
