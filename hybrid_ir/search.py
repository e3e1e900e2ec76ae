r"""Encode -> index -> search your own corpus with a trained (or pretrained) model.

  python -m hybrid_ir.search --config configs/demo.py --workdir workdirs/demo \
      --corpus corpus.jsonl --queries queries.tsv --qrels qrels.txt     # latest checkpoint
  python -m hybrid_ir.search --config configs/e5_small.py --pretrained \
      --corpus corpus.jsonl --queries queries.tsv --out runs/e5.trec    # the model as loaded

Inputs. The corpus and the queries share one format, chosen by the file name (`.gz` allowed):
  *.jsonl  one JSON object per line: {"id": "d1", "text": "...", "lang": "de"}; `lang` and
           `title` (prepended to the text, as MIRACL/BEIR do) are optional, other fields ignored.
  *.tsv    `id<TAB>text` or `id<TAB>text<TAB>lang` per line; no header, no quoting.
  qrels    TREC: `qid Q0 docid relevance` per line, whitespace separated.
Blank lines are skipped. A missing field, an empty id or text, an id with whitespace (TREC files
are whitespace separated), a duplicate id, or a qrels line naming a query or document that is not
in the files stops with `file:line` and the offending value (`hybrid_ir.data.text_files` reads
them).

Model: the config's `model` (any hybrid_ir.eval config works); its params are the workdir's
finished checkpoint (--step, default the latest), restored alone into the encoder's abstract
params (`checkpoint.restore_params`), or the model as loaded (--pretrained).

Search is exact: dot products of L2-normalised embeddings, streamed through `retrieval.top_k` in
[query_block, cand_block] score blocks, so memory grows with the block sizes and k, not with the
corpus (cached corpus embeddings are memory-mapped). Ties: higher score first, then corpus order.

Outputs:
  --out (default <workdir>/search/<queries file>.<step_N|pretrained>.trec): a TREC run file,
      `qid Q0 docid rank score tag`, the top --k documents per query (scores to 9 digits).
  with --qrels: the run scored by ir_measures (default nDCG@10, R@100, RR@10 = MRR@10) over the
      judged queries, and per query language when the queries carry `lang`; printed as a table
      and written to <out>.metrics.json. (trec_eval and ir_measures order exact score ties by
      docid, not corpus order; only exact ties can differ.)

The console shows search's own lines and the encoder's progress; the log (JAX's backend probe,
Orbax, warnings, an error's traceback) goes to search.INFO next to the run file.

LSAR (config.model.lsar: a rank and a training source, see `hybrid_ir.lsar` and
docs/evaluation.md): the checkpoint's language subspace, estimated once from that source and kept
in <workdir>/lsar/ (cache/lsar without --workdir), is projected out of queries and documents
inside the encoder.

Cache: corpus embeddings are kept in --cache_dir/<corpus file>-<key>/ (shards + manifest; a
killed encode resumes), key = sha256 of (model config, a sha256 of every parameter's bytes and of
the LSAR basis if any, the corpus file's sha256). Another checkpoint, a retrained step or an edited
corpus gets a new entry; identical params and corpus reuse the old one. Old entries are never
deleted: remove them by hand.

Recommended for: a trained model on your own corpus (Tevatron's encode -> index -> search in one
command). Related: `hybrid_ir.eval` (LAReQA/MIRACL benchmarks), `hybrid_ir.evaluators.miracl`
(MIRACL's file layout), `hybrid_ir.export` (a sentence-transformers model for other tools).
"""
import hashlib
import json
import os
import pathlib
from typing import Any, Callable, Sequence

from absl import flags
import numpy as np

from hybrid_ir import config_flags
from hybrid_ir import lsar
from hybrid_ir.data import store as store_lib
from hybrid_ir.data import text_files

PredictFn = Callable[[Any, list[str], str], np.ndarray]  # (params, texts, kind) -> [N, D]
DEFAULT_MEASURES = ("nDCG@10", "R@100", "RR@10")


# ------------------------------------------------------------------------------------------------
# Encode (cached) and search.
# ------------------------------------------------------------------------------------------------

def cache_entry(cache_dir: str | os.PathLike, model_config: Any, params_fp: str,
                corpus_path: str | os.PathLike) -> tuple[pathlib.Path, str]:
  """(directory, key) of a corpus' cached embeddings (see the module docstring). params_fp:
  the fingerprint of the weights encoded with (`lsar.Projected` ones include the basis)."""
  ident = {"model": lsar.encoding_settings(model_config), "params_sha256": params_fp,
           "corpus_sha256": store_lib.file_digest(corpus_path)}
  key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
  return pathlib.Path(cache_dir) / f"{pathlib.Path(corpus_path).name}-{key[:16]}", key


def search(predict_fn: PredictFn, params: Any, queries: text_files.Texts,
           corpus: text_files.Texts, *, k: int = 100,
           cache: tuple[pathlib.Path, str] | None = None, shard_size: int = 4096,
           query_block: int = 256, cand_block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k of each query over the corpus: (scores [Nq, k], corpus indices [Nq, k]).

  Inputs:
    predict_fn: (params, texts, kind) -> [n, D] L2-normalised (kind 'query' / 'passage'), e.g.
      `functools.partial(encoder.encode, batch_size=64)`.
    cache: (directory, key) from `cache_entry`, or None to encode the corpus in memory.
    shard_size: documents per encoded (and cached) shard; query_block / cand_block: the score
      block shape, [query_block, cand_block] float32 on device at a time.
  Rows past the corpus (k > corpus size) are -1 / -inf.
  """
  from hybrid_ir import retrieval
  from hybrid_ir.evaluators import embedding_cache
  if cache is not None:
    # The encoder shows its own progress per shard; a second bar over shards would interleave.
    shards = embedding_cache.encode_sharded(predict_fn, params, corpus.texts, cache[0],
                                            key=cache[1], shard_size=shard_size, progress=False)
  else:
    shards = [np.asarray(predict_fn(params, corpus.texts[i:i + shard_size], "passage"),
                         np.float32) for i in range(0, len(corpus), shard_size)]
  q = np.asarray(predict_fn(params, queries.texts, "query"), np.float32)
  # Blocks no larger than the next power of two of the inputs: a 20-document corpus needs no
  # 8192-row padding (and few shapes means few compiles).
  fit = lambda n, block: min(block, max(8, 1 << (n - 1).bit_length()))  # noqa: E731
  return retrieval.top_k(q, shards, k, query_block=fit(len(queries), query_block),
                         cand_block=fit(len(corpus), cand_block))


def write_run(path: str | os.PathLike, queries: text_files.Texts, corpus: text_files.Texts,
              scores: np.ndarray, indices: np.ndarray, tag: str = "hybrid_ir") -> dict[str, dict[str, float]]:
  """Writes the TREC run file; returns the run as {qid: {docid: score}} (what ir_measures takes)."""
  if not tag or any(c.isspace() for c in tag):
    raise ValueError(f"run tag {tag!r}: must be non-empty without whitespace")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  run, lines = {}, []
  for qid, row_s, row_i in zip(queries.ids, scores, indices):
    run[qid] = {}
    for rank, (s, i) in enumerate(((s, i) for s, i in zip(row_s, row_i) if i >= 0), 1):
      docid = corpus.ids[i]
      run[qid][docid] = float(s)
      lines.append(f"{qid} Q0 {docid} {rank} {float(s):.9g} {tag}\n")
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(lines))
  os.replace(tmp, path)
  return run


def _ir_measures():
  try:
    import ir_measures
  except ImportError as e:
    raise ImportError("scoring a run (--qrels) needs ir_measures: pip install 'hybrid_ir[search]'"
                      " (or pip install ir-measures)") from e
  return ir_measures


def evaluate_run(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]],
                 queries: text_files.Texts, measures: Sequence[str] = DEFAULT_MEASURES) -> dict:
  """ir_measures over the judged queries: {'all': {measure: mean}, 'per_lang': {lang: {...}},
  'num_queries', 'num_judged'}; per_lang only when the queries carry `lang`."""
  irm = _ir_measures()
  parsed = []
  for m in measures:
    try:
      parsed.append(irm.parse_measure(m))
    except (ValueError, NameError, SyntaxError, TypeError) as e:
      raise ValueError(f"measure {m!r} is not an ir_measures measure ({e}); e.g. "
                       f"{', '.join(DEFAULT_MEASURES)}, P@10, AP") from None
  judged = {q: run.get(q, {}) for q in queries.ids if q in qrels}
  per_query: dict[str, dict[str, float]] = {}
  for metric in irm.iter_calc(parsed, qrels, judged):
    per_query.setdefault(str(metric.measure), {})[metric.query_id] = float(metric.value)
  # Each of these measures is a mean over queries; so is every subset's figure.
  names = [str(m) for m in parsed]
  out = {"all": {n: float(np.mean(list(per_query.get(n, {}).values()) or [np.nan]))
                 for n in names},
         "num_queries": len(queries), "num_judged": len(judged), "per_query": per_query}
  if queries.has_langs:
    by_lang: dict[str, list[str]] = {}
    for qid, lang in zip(queries.ids, queries.langs):
      if qid in judged:
        by_lang.setdefault(lang or "?", []).append(qid)
    out["per_lang"] = {l: {n: float(np.mean([per_query[n][q] for q in qs if q in per_query[n]]))
                           for n in names} | {"num_judged": len(qs)}
                       for l, qs in sorted(by_lang.items())}
  return out


def metrics_table(metrics: dict) -> str:
  """Markdown: one row for all judged queries, then one per query language."""
  names = list(metrics["all"])
  rows = [("all", metrics["all"], metrics["num_judged"])]
  rows += [(l, m, m["num_judged"]) for l, m in metrics.get("per_lang", {}).items()]
  lines = ["| queries | judged | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
  for label, m, n in rows:
    lines.append(f"| {label} | {n} | " + " | ".join(f"{m[k]:.4f}" for k in names) + " |")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# The binary.
# ------------------------------------------------------------------------------------------------

def run(config, *, corpus: str, queries: str, workdir: str | None = None, step: int | None = None,
        pretrained: bool = False, qrels: str | None = None, out: str | None = None, k: int = 100,
        measures: Sequence[str] = DEFAULT_MEASURES, cache_dir: str | None = None,
        tag: str = "hybrid_ir", batch_size: int | None = None, shard_size: int = 4096,
        query_block: int = 256, cand_block: int = 8192, encoder=None,
        log_file: bool = False) -> dict:
  """What the binary does, callable in-process. Returns {'run': path, 'cache': dir or None,
  'metrics': evaluate_run's dict or None, 'tag': step_<N> | pretrained, 'lsar': the subspace's
  .npz or None}.

  cache_dir: None -> <workdir>/search/cache, or cache/search without a workdir; '' -> no cache.
  encoder: an already built encoder of `config.model` (tests, notebooks); default: built here.
  log_file: the log (library INFO and warnings, tracebacks) goes to <run file's folder>/
  search.INFO from before the model loads (the binary); the console shows only search's lines.
  """
  if not pretrained and workdir is None:
    raise ValueError("pass --workdir (a training run's checkpoints) or --pretrained")
  if pretrained and step is not None:
    raise ValueError("--step reads a checkpoint; it cannot go with --pretrained")
  lsar.check(config)  # a bad model.lsar fails before anything is read
  queries_t = text_files.read_texts(queries, "queries")
  corpus_t = text_files.read_texts(corpus, "corpus")
  qrels_d = text_files.read_qrels(qrels, queries_t, corpus_t) if qrels else None
  if qrels_d is not None:
    _ir_measures()  # fail before encoding, not after
  from hybrid_ir import checkpoint, models, run_dir
  with run_dir.HeldLog() as log:  # the backend probe and Orbax's INFO go to the log, not here
    if not pretrained:
      step = step if step is not None else checkpoint.latest_finished_step(workdir)
    run_tag = "pretrained" if pretrained else f"step_{step}"
    if out is None:
      if workdir is None:
        raise ValueError("--out is required without --workdir (where the run file goes)")
      out = os.path.join(workdir, "search", f"{pathlib.Path(queries).name}.{run_tag}.trec")
    if log_file:
      pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
      log.to_file("search", pathlib.Path(out).parent)
    encoder = encoder or models.load_encoder(config.model)
    if pretrained:
      params = encoder.params
    else:
      params = checkpoint.restore_params(workdir, step, checkpoint.abstract(encoder.params))
  batch_size = batch_size or config.get("eval_batch_size", 64)
  sub = lsar.estimate(config, encoder, params, directory=lsar.default_dir(workdir), tag=run_tag,
                      batch_size=batch_size)
  if sub is not None:
    print(sub.summary(), flush=True)
    params = lsar.Projected(params, sub.basis)
  if cache_dir is None:
    cache_dir = os.path.join(workdir, "search", "cache") if workdir else os.path.join(
        "cache", "search")
  cache = None
  if cache_dir:
    from hybrid_ir.evaluators import embedding_cache
    cache = cache_entry(cache_dir, config.model, embedding_cache.params_fingerprint(params),
                        corpus)
    hit = (cache[0] / "manifest.json").is_file()
    print(f"corpus embeddings: {cache[0]} ({'cached' if hit else 'encoding'})", flush=True)
  predict_fn = lsar.predict_fn(encoder, batch_size)
  print(f"search: {len(queries_t)} queries x {len(corpus_t)} documents, top {k}, "
        f"{config.model.name} ({run_tag})", flush=True)
  scores, indices = search(predict_fn, params, queries_t, corpus_t, k=k, cache=cache,
                           shard_size=shard_size, query_block=query_block, cand_block=cand_block)
  run_dict = write_run(out, queries_t, corpus_t, scores, indices, tag)
  print(f"wrote {out}", flush=True)
  metrics = None
  if qrels_d is not None:
    if k < 100 and any(str(m).startswith("R@") for m in measures):
      print(f"note: k={k}: recall at a depth beyond k counts only the top {k}", flush=True)
    metrics = evaluate_run(run_dict, qrels_d, queries_t, measures)
    metrics.update(run=str(out), qrels=str(qrels), model=config.model.name, checkpoint=run_tag,
                   k=k)
    path = pathlib.Path(f"{out}.metrics.json")
    path.write_text(json.dumps(metrics, indent=1))
    unjudged = metrics["num_queries"] - metrics["num_judged"]
    print(metrics_table(metrics) + (f"\n\n{unjudged} queries have no qrels and are not scored."
                                    if unjudged else ""), flush=True)
    print(f"wrote {path}", flush=True)
  return {"run": str(out), "cache": str(cache[0]) if cache else None, "metrics": metrics,
          "tag": run_tag, "lsar": str(sub.path) if sub is not None else None}


def define_flags() -> None:
  """The binary's flags; defined only when run as a program (see hybrid_ir.train.define_flags)."""
  config_flags.define_config()
  config_flags.define_model_flags("search")
  flags.DEFINE_string("corpus", None, "Corpus file: .jsonl or .tsv (id, text, optional lang).")
  flags.DEFINE_string("queries", None, "Queries file, same formats as --corpus.")
  flags.DEFINE_string("qrels", None, "TREC qrels (qid Q0 docid rel): score the run.")
  flags.DEFINE_string("out", None, "Run file (default <workdir>/search/<queries>.<tag>.trec).")
  flags.DEFINE_integer("k", 100, "Documents per query in the run file.")
  flags.DEFINE_list("measures", list(DEFAULT_MEASURES), "ir_measures measures, with --qrels.")
  flags.DEFINE_string("cache_dir", None, "Corpus embedding cache (default <workdir>/search/cache, "
                      "or cache/search without --workdir); '' disables it.")
  flags.DEFINE_string("tag", "hybrid_ir", "The run file's last column.")
  flags.DEFINE_integer("batch_size", None, "Encoding batch (default: config.eval_batch_size).")
  flags.DEFINE_integer("cand_block", 8192, "Documents per score block (memory: query_block x "
                       "cand_block float32).")
  flags.DEFINE_integer("query_block", 256, "Queries per score block.")


def main(argv) -> None:
  del argv
  config_flags.require("config", "corpus", "queries")
  f = flags.FLAGS
  # Bad input ends in one line naming the file and line (config_flags.run); the traceback goes
  # to the log.
  run(f.config, corpus=f.corpus, queries=f.queries, workdir=f.workdir, step=f.step,
      pretrained=f.pretrained, qrels=f.qrels, out=f.out, k=f.k, measures=f.measures,
      cache_dir=f.cache_dir, tag=f.tag, batch_size=f.batch_size, query_block=f.query_block,
      cand_block=f.cand_block, log_file=True)


if __name__ == "__main__":
  define_flags()
  config_flags.run(main)
