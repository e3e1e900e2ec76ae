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
  modules.json                     Transformer -> Pooling -> [Dense] -> [Dense (LSAR)] -> Normalize
  sentence_bert_config.json        max_seq_length = the largest bucket (longer texts are truncated,
                                   as our tokenizer does); model_args add_pooling_layer=False
                                   where no pooler was trained, so that no random one is built
  1_Pooling/config.json            pooling 'mean' -> mean over tokens incl. the prompt; 'cls' -> [CLS]
  2_Dense/                         pooling 'pooler' only (LaBSE): CLS pooling + a Dense layer holding
                                   the pooler's weights with tanh, exactly how LaBSE ships in
                                   sentence-transformers (the pooler is also in model.safetensors)
  N_Dense/ (LSAR)                  with config.model.lsar on (`hybrid_ir.lsar`): the language
                                   subspace U of these params projected out, a Dense layer of
                                   weight I - U U^T, no bias, identity activation
  N_Normalize/                     L2 normalisation, as our `Encoder.apply`
  config_sentence_transformers.json   prompts {'query': query_prefix, 'passage': passage_prefix}
  README.md                        the model card (`model_card`): base model, training sources and
                                   languages, batch strategy and α, steps, the checkpoint's
                                   LAReQA / MIRACL metrics (<workdir>/eval/step_<N>.json) with
                                   their protocol, how to load it
Every file is world-readable (0644). The binary's log goes to <out's parent>/export.INFO.

Related: `hybrid_ir.checkpoint.restore_params` (what is read), `hybrid_ir.models.weights` (import).
USE-m3 is not a HF architecture (DAN + CNN n-gram encoder), so exporting it raises; serve it with
`hybrid_ir.models.load_encoder` + the checkpoint's params instead.
"""
from __future__ import annotations

import functools
import json
import logging
import pathlib
from typing import Any, Callable

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
                   provenance: str = "", card: Callable[..., str] | None = None,
                   lsar_basis: np.ndarray | None = None) -> pathlib.Path:
  """Writes `encoder` with `params` as a sentence-transformers directory (see module docstring).

  Inputs: encoder, a BERT-family `hybrid_ir.models.Encoder`; params, its params pytree (e.g. from
  `checkpoint.restore_params`); out_dir, created if missing (must be empty if it exists);
  provenance, one line for a plain README; card, instead, `model_card` with all but the
  encoder's own fields (prefixes, pooling, max_len, has_pooler, lsar_layer) bound; lsar_basis,
  an LSAR basis [hidden, r] (`hybrid_ir.lsar`) written as a Dense layer before Normalize.
  Returns out_dir. Raises ValueError for non-BERT encoders.
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
  lsar_layer = None
  if lsar_basis is not None:
    # (I - U U^T) is symmetric, so torch's weight [out, in] is the same matrix.
    u = np.asarray(lsar_basis, np.float64)
    d = out / f"{len(modules)}_Dense"
    _write_json(d / "config.json", {"in_features": h, "out_features": h, "bias": False,
                                    "activation_function": "torch.nn.modules.linear.Identity"})
    safetensors.numpy.save_file(
        {"linear.weight": np.ascontiguousarray(np.eye(h) - u @ u.T, np.float32)},
        str(d / "model.safetensors"), metadata={"format": "pt"})
    modules.append(("sentence_transformers.models.Dense", d.name))
    lsar_layer = (d.name, u.shape[1])
  norm = out / f"{len(modules)}_Normalize"
  norm.mkdir()
  modules.append(("sentence_transformers.models.Normalize", norm.name))
  _write_json(out / "modules.json", [
      {"idx": i, "name": str(i), "path": path, "type": typ}
      for i, (typ, path) in enumerate(modules)])
  bert_config = {"max_seq_length": tok.max_len, "do_lower_case": False}
  if "pooler.dense.weight" not in tensors:
    # No pooler was trained (mean or CLS pooling): without this, transformers builds one with
    # random weights and sentence-transformers reports them as "MISSING ... newly initialized".
    bert_config["model_args"] = {"add_pooling_layer": False}
  _write_json(out / "sentence_bert_config.json", bert_config)
  _write_json(out / "config_sentence_transformers.json", {
      "prompts": dict(tok.prefixes), "default_prompt_name": None,
      "similarity_fn_name": "cosine"})
  has_pooler = "pooler.dense.weight" in tensors
  (out / "README.md").write_text(
      card(prefixes=tok.prefixes, pooling=cfg.pooling, max_len=tok.max_len, has_pooler=has_pooler,
           lsar_layer=lsar_layer)
      if card else f"# {encoder.name} (exported by hybrid_ir)\n\n{provenance}\n\n"
      + how_to_load(out.name, tok.prefixes, has_pooler))
  make_world_readable(out)
  logging.info("exported %s (%d tensors, pooling %s) to %s", encoder.name, len(tensors),
               cfg.pooling, out)
  return out


def make_world_readable(out: pathlib.Path) -> None:
  """Files 0644 and folders 0755: an export is shared (safetensors writes its file 0600)."""
  for path in [out, *out.rglob("*")]:
    path.chmod(0o755 if path.is_dir() else 0o644)


# ------------------------------------------------------------------------------------------------
# The model card (README.md).
# ------------------------------------------------------------------------------------------------

# Hugging Face names of the bundled models (the card's base_model).
HF_NAMES = {"bundled:e5-small": "intfloat/multilingual-e5-small"}
# Headline metrics of each evaluation type, as eval.py's JSON names them.
HEADLINE = {"lareqa": (("mo_map", "Mo mAP"), ("cr_map", "Cr mAP"), ("mul_map", "Mul mAP"),
                       ("mo_r1", "Mo R@1"), ("cr_r1", "Cr R@1"), ("mul_r10", "Mul R@10"),
                       ("num_questions", "questions")),
            "miracl": (("ndcg@10", "nDCG@10"), ("recall@100", "R@100"),
                       ("num_judged", "judged queries"))}
PROTOCOL = {
    "lareqa": "LAReQA (Roy et al., 2020), as `hybrid_ir.evaluators.lareqa` computes it: the "
              "candidates are every sentence of every paragraph in every language; a question's "
              "relevant set is its answer sentence in each language. Mo = X→X, Cr = X→Y (X ≠ Y), "
              "each macro-averaged over its language settings; Mul = one pool of all languages, "
              "macro-averaged over query languages; AP over the full ranking, ties by candidate "
              "index; exact search on L2-normalised embeddings.",
    "miracl": "MIRACL-style (`hybrid_ir.evaluators.miracl`): exact dense retrieval over the local "
              "corpus; nDCG@10 with linear gains (trec_eval's ndcg_cut_10) and Recall@100 over the "
              "judged topics.",
}


def how_to_load(name: str, prefixes: dict, has_pooler: bool) -> str:
  """The card's "How to load" section."""
  pooler = "" if has_pooler else ", add_pooling_layer=False"
  return (
      "## How to load\n\n"
      "```python\nfrom sentence_transformers import SentenceTransformer\n"
      f"model = SentenceTransformer({name!r})  # this folder\n"
      'q = model.encode(["..."], prompt_name="query")\n'
      'p = model.encode(["..."], prompt_name="passage")\n'
      "scores = model.similarity(q, p)  # cosine\n```\n\n"
      f"The prompts are {dict(prefixes)}. With transformers alone: "
      f"`AutoModel.from_pretrained(folder{pooler})` and `AutoTokenizer`, prepend the prompt, "
      "apply the pooling of `1_Pooling/config.json`, then L2-normalise.\n")


def _metrics_section(report: dict[str, Any], source: str) -> list[str]:
  lines = []
  for dataset, kind in sorted((report.get("types") or {}).items()):
    cols = [(k, label) for k, label in HEADLINE.get(kind, ())
            if f"{dataset}/{k}" in report.get("metrics", {})]
    if not cols:
      continue
    m = report["metrics"]
    fmt = lambda k: (f"{m[f'{dataset}/{k}']:.4f}" if not k.startswith("num_")  # noqa: E731
                     else str(int(m[f"{dataset}/{k}"])))
    lines += [f"### {dataset}\n", "| " + " | ".join(label for _, label in cols) + " |",
              "|" + "---|" * len(cols), "| " + " | ".join(fmt(k) for k, _ in cols) + " |", "",
              f"Protocol: {PROTOCOL.get(kind, kind)} From `{source}`.\n"]
  return lines


def model_card(saved: dict[str, Any], *, name: str, checkpoint: str, workdir: str | None,
               report: dict[str, Any] | None, report_path: str | None, prefixes: dict,
               pooling: str, max_len: int, has_pooler: bool,
               lsar_layer: tuple[str, int] | None = None, lsar_source: str | None = None
               ) -> str:
  """README.md of an export: what the model is, what it was trained on and how, what it scored,
  and how to load it.

  Inputs: saved, the config saved with the checkpoint (`checkpoint.saved_config`; the --config
  given for a pretrained export); checkpoint, 'step_<N>' or 'pretrained'; report, the eval JSON of
  that checkpoint (`<workdir>/eval/<checkpoint>.json`, written by hybrid_ir.eval) or None;
  lsar_layer, (folder, rank) of the LSAR Dense layer, and lsar_source, what estimated it.
  """
  model = saved.get("model") or {}
  base = model.get("name", "?")
  base_hf = HF_NAMES.get(base, base[3:] if base.startswith("hf:") else None)
  inp = saved.get("input") or {}
  sources = inp.get("sources") or []
  langs = sorted({l for src in sources for l in (src.get("langs") or [])})
  front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
           "tags: [sentence-transformers, feature-extraction, sentence-similarity, hybrid_ir]"]
  if base_hf:
    front.append(f"base_model: {base_hf}")
  if langs and checkpoint != "pretrained":
    front.append(f"language: [{', '.join(langs)}]")
  front.append("---")
  state = "pretrained" if checkpoint == "pretrained" else f"fine-tuned, {checkpoint}"
  lines = front + ["", f"# {base} ({state}), exported by hybrid_ir", ""]
  lines += ["## Model", "",
            f"- Base model: `{base}`" + (f" ([{base_hf}](https://huggingface.co/{base_hf}))"
                                         if base_hf else ""),
            f"- Pooling: {pooling}, then L2 normalisation; max_seq_length {max_len}; "
            f"prompts {dict(prefixes)}; similarity: cosine"]
  if lsar_layer:
    lines.append(f"- Language subspace removed (LSAR, Xie et al. 2024): rank {lsar_layer[1]}, "
                 f"estimated from {lsar_source or 'the training source'}; the `{lsar_layer[0]}` "
                 "layer (I - U U^T) before the normalisation")
  lines.append("")
  if checkpoint == "pretrained":
    lines += ["## Training", "", "Not fine-tuned: the base model as hybrid_ir loads it.", ""]
  else:
    tp = inp.get("type_probs") or {}
    total = saved.get("total_steps")
    opt, loss = saved.get("optimizer") or {}, saved.get("loss") or {}
    lines += ["## Training", "",
              f"- Checkpoint: {checkpoint.replace('_', ' ')} of `{workdir}`"
              + (f" (of {total} training steps)" if total else ""),
              f"- Batch strategy: each batch is monolingual X-X with probability α = "
              f"{tp.get('mono', 0)}, cross-lingual X-Y with {tp.get('cross', 0)}, mixed with "
              f"{tp.get('mixed', 0)} (`input.type_probs`); global batch "
              f"{inp.get('batch_size')}, seed {saved.get('seed')}",
              f"- Loss: InfoNCE over in-batch negatives ({loss.get('variant', '?')}, temperature "
              f"{loss.get('temperature', '?')}); AdamW, lr {opt.get('lr', '?')}",
              "- Training sources:", "",
              "| source | kind | languages | hard negatives per example |", "|---|---|---|---|"]
    for src in sources:
      lines.append(f"| {src.get('name')} | {src.get('kind')} | "
                   f"{', '.join(src.get('langs') or []) or 'all'} | "
                   f"{src.get('num_negatives', 0) or 0} |")
    lines.append("")
  lines += ["## Evaluation", ""]
  if report:
    lines += _metrics_section(report, report_path) or ["The eval JSON holds no LAReQA or MIRACL "
                                                       "metrics.", ""]
  else:
    lines += [f"No evaluation of {checkpoint} was found"
              + (f" (`{workdir}/eval/{checkpoint}.json`; run `python -m hybrid_ir.eval`)"
                 if workdir else "") + ".", ""]
  return "\n".join(lines) + "\n" + how_to_load(name, prefixes, has_pooler)


def export(config, out_dir: str | pathlib.Path, *, workdir: str | pathlib.Path | None = None,
           step: int | None = None, pretrained: bool = False, log_file: bool = False,
           lsar_dir: str | pathlib.Path | None = None) -> pathlib.Path:
  """Loads `config.model`, takes params from `workdir`'s checkpoint `step` (None: the latest
  finished one) or, with `pretrained=True`, as loaded, and exports them (`export_encoder`) with a
  model card (`model_card`) from the checkpoint's saved config and its `<workdir>/eval/step_<N>.json`
  when hybrid_ir.eval wrote one.

  Recommended after `hybrid_ir.train` on the same config. Raises ValueError for a USE-m3 config
  (before loading anything) and FileNotFoundError naming the finished steps for a missing step.
  log_file: the log (backend probe, Orbax) goes to `<out_dir's parent>/export.INFO` from before
  the model loads (the binary), so the console shows only export's own line. With
  config.model.lsar on, the params' language subspace (`hybrid_ir.lsar.estimate`, kept in
  lsar_dir, default <workdir>/lsar or cache/lsar) becomes a Dense layer of the export.
  """
  from hybrid_ir import checkpoint
  from hybrid_ir import lsar
  from hybrid_ir import models
  from hybrid_ir import run_dir
  name = config.model.get("name")
  if pretrained == (workdir is not None):
    raise ValueError("export: give exactly one of workdir (a checkpoint) or pretrained=True; got "
                     f"workdir={workdir!r}, pretrained={pretrained}")
  if name == "bundled:use-m3":
    raise ValueError("export: 'bundled:use-m3' (DAN + CNN) is not a HF / sentence-transformers "
                     "architecture and cannot be exported; serve it with "
                     "hybrid_ir.models.load_encoder + checkpoint.restore_params, or train a "
                     "BERT-family model (e.g. configs/e5_small.py) to export")
  lsar.check(config)  # a bad model.lsar fails before the model loads
  out = pathlib.Path(out_dir)
  with run_dir.HeldLog() as log:
    if log_file:
      out.parent.mkdir(parents=True, exist_ok=True)
      log.to_file("export", out.parent)
    encoder = models.load_encoder(config.model)
    if pretrained:
      params, tag, saved = encoder.params, "pretrained", checkpoint.config_to_json(config)
    else:
      step = checkpoint.latest_finished_step(workdir) if step is None else step
      params = checkpoint.restore_params(workdir, step, checkpoint.abstract(encoder.params))
      tag, saved = f"step_{step}", checkpoint.saved_config(workdir, step)
  sub = lsar.estimate(config, encoder, params, tag=tag,
                      directory=lsar_dir or lsar.default_dir(workdir))
  if sub is not None:
    print(sub.summary(), flush=True)
  report_path = pathlib.Path(workdir, "eval", f"{tag}.json") if workdir else None
  report = None
  if report_path is not None and report_path.is_file():
    try:
      report = json.loads(report_path.read_text())
    except ValueError as e:
      raise ValueError(f"export: {report_path} is not valid JSON ({e}); run hybrid_ir.eval "
                       "again or move it away") from None
  card = functools.partial(
      model_card, saved, name=out.name, checkpoint=tag,
      workdir=str(workdir) if workdir else None, report=report,
      report_path=str(report_path) if report else None,
      lsar_source=None if sub is None else (
          f"source {sub.settings.source!r} ({', '.join(sub.langs)}; {sum(sub.counts)} texts)"))
  return export_encoder(encoder, params, out, card=card,
                        lsar_basis=None if sub is None else sub.basis)


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
         pretrained=_PRETRAINED.value, log_file=True)
  print(f"exported to {out}", flush=True)


if __name__ == "__main__":
  # Flags live here, not at import time, so `hybrid_ir.export` can be imported next to
  # hybrid_ir.train / eval (notebook, tests), which define --config and --workdir too.
  from absl import flags
  from hybrid_ir import config_flags
  _CONFIG = config_flags.define_config()
  _WORKDIR, _STEP, _PRETRAINED = config_flags.define_model_flags("export")
  _OUT = flags.DEFINE_string("out", None, "Output directory (new or empty).", required=True)
  _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete --out first if it exists.")
  config_flags.run(main)
