"""MIRACL-style evaluation from local files: nDCG@10 and Recall@100 from exact dense retrieval.

With a cache_dir, corpus embeddings are written to disk in shards
(`hybrid_ir.evaluators.embedding_cache.encode_sharded`: `shard-00000.npy`, ... plus
`manifest.json`), so a killed encode resumes at the first missing shard; retrieval then streams
the shards through `retrieval.top_k` (memory-mapped; the corpus never has to fit in RAM or on
device at once). The cache is keyed by the params' fingerprint, so each checkpoint a polling
evaluator scores gets its own entry (`<cache_dir>/<eval name>/<key>/`).

Metrics per query (kept per query), then the mean over judged queries:
  nDCG@10: linear gains = qrels grade (negative grades count 0), log2(rank + 1) discount, ideal DCG
    from all of the query's judged grades (trec_eval `ndcg_cut_10`).
  Recall@100: relevant (grade > 0) documents in the top 100 / all relevant documents.
Topics without any relevant judgement are excluded and counted (`num_unjudged`). Tie rule of the
ranking: `hybrid_ir.retrieval` (score desc, corpus order asc).
Recommended for MIRACL dev (15 languages, monolingual) and any topics/qrels/corpus triple.
"""
import dataclasses
import logging
import pathlib
from typing import Any, Callable, Iterator

import numpy as np

from hybrid_ir import evaluators
from hybrid_ir import retrieval
from hybrid_ir.data import miracl as miracl_data
from hybrid_ir.data import text_files
from hybrid_ir.evaluators import embedding_cache
from hybrid_ir.evaluators import metrics

PredictFn = Callable[[Any, list[str], str], np.ndarray]


@dataclasses.dataclass
class MiraclResult:
  """Per-query nDCG@10 / Recall@100 (NaN for excluded topics) and counts."""
  name: str
  qids: list[str]
  ndcg10: np.ndarray
  recall100: np.ndarray
  top_docids: list[list[str]]
  counts: dict[str, int]

  def metrics(self) -> dict[str, float]:
    keep = ~np.isnan(self.ndcg10)
    return {'ndcg@10': float(self.ndcg10[keep].mean()) if keep.any() else float('nan'),
            'recall@100': float(self.recall100[keep].mean()) if keep.any() else float('nan'),
            **self.counts}

  def table(self, label: str | None = None) -> str:
    """Markdown: one row (named `label`, e.g. the model and checkpoint)."""
    m = self.metrics()
    return evaluators.markdown_table(
        [self.name, 'nDCG@10', 'Recall@100', 'judged queries', 'documents'],
        [[label or '', f'{m["ndcg@10"]:.3f}', f'{m["recall@100"]:.3f}', m['num_judged'],
          m['num_documents']]])

  def to_json(self) -> dict:
    nan_none = lambda x: [None if v != v else float(v) for v in x]  # noqa: E731
    return {'name': self.name, 'metrics': self.metrics(), 'counts': self.counts,
            'per_query': {'qid': self.qids, 'ndcg@10': nan_none(self.ndcg10),
                          'recall@100': nan_none(self.recall100),
                          'top10': [d[:10] for d in self.top_docids]}}


def evaluate_topk(top_indices: np.ndarray, docids: list[str], qids: list[str],
                  qrels: dict[str, dict[str, int]], name: str = 'miracl') -> MiraclResult:
  """nDCG@10 and Recall@100 per query from a top-k list (k >= 100 for exact Recall@100).

  Inputs: top_indices [Nq, k] corpus indices best first (-1 padding); docids: the corpus order;
  qids: the query order of `top_indices`; qrels: {qid: {docid: grade}}.
  """
  top_indices = np.asarray(top_indices)
  if top_indices.shape[1] < 100:
    logging.warning('%s: top-%d lists; Recall@100 counts only the top %d', name,
                    top_indices.shape[1], top_indices.shape[1])
  docids_arr = np.asarray(docids, dtype=object)
  gains = np.zeros(top_indices.shape, np.float64)
  top_docids, n_pos, ideal = [], np.zeros(len(qids)), []
  for i, qid in enumerate(qids):
    judged = qrels.get(qid, {})
    ids = [str(d) for d in docids_arr[top_indices[i][top_indices[i] >= 0]]]
    top_docids.append(ids)
    gains[i, :len(ids)] = [max(judged.get(d, 0), 0) for d in ids]
    pos = [g for g in judged.values() if g > 0]
    n_pos[i] = len(pos)
    ideal.append(pos)
  ideal_arr = np.zeros((len(qids), max([len(p) for p in ideal] + [1])))
  for i, p in enumerate(ideal):
    ideal_arr[i, :len(p)] = p
  ndcg = metrics.ndcg_at(gains, ideal_arr, 10)
  with np.errstate(invalid='ignore', divide='ignore'):
    recall = np.where(n_pos > 0, (gains[:, :100] > 0).sum(axis=1) / n_pos, np.nan)
  ndcg = np.where(n_pos > 0, ndcg, np.nan)
  counts = {'num_queries': len(qids), 'num_judged': int((n_pos > 0).sum()),
            'num_unjudged': int((n_pos == 0).sum()), 'num_documents': len(docids)}
  if counts['num_unjudged']:
    logging.warning('%s: %d of %d queries have no relevant judgement and are excluded', name,
                    counts['num_unjudged'], len(qids))
  return MiraclResult(name=name, qids=list(qids), ndcg10=ndcg, recall100=recall,
                      top_docids=top_docids, counts=counts)


class MiraclEvaluator:
  """Encodes topics and a corpus from local files and yields `{eval_name}/ndcg@10`, `recall@100`.

  Inputs:
    predict_fn: (params, texts, kind) -> [N, D] L2-normalised (kind 'query' / 'passage').
    topics / qrels / corpus: paths (TSV, TREC qrels, JSONL); see `hybrid_ir.data.miracl`.
    cache_dir: where corpus shards go (required for a large corpus: it makes encoding resumable);
      cache_key names the encoding settings (e.g. the model config: prefixes, pooling; required
      with cache_dir); the entry's key adds the fingerprint of the params given to `run`.
    shard_size: documents per shard (and per predict_fn call); k: retrieval depth (>= 100).
    eval_name (alias name): metric-name prefix (default 'miracl').
  After `run`, `result` (alias `last_result`) holds the `MiraclResult`.
  """

  def __init__(self, predict_fn: PredictFn, topics: str, qrels: str, corpus: str, *,
               eval_name: str | None = None, name: str | None = None, cache_dir: str | None = None,
               cache_key: str | None = None, shard_size: int = 4096, k: int = 100,
               query_block: int = 256, cand_block: int = 8192):
    if cache_dir and not cache_key:
      raise ValueError('MiraclEvaluator: cache_dir needs a cache_key naming the encoding settings')
    self.predict_fn = predict_fn
    self.topics = miracl_data.load_topics(topics)
    self.qrels = text_files.load_qrels(qrels)
    self.docids, self.texts = miracl_data.load_corpus(corpus)
    self.counts = miracl_data.check_qrels(self.qrels, self.docids, self.topics, qrels)
    self.eval_name = eval_name or name or 'miracl'
    self.cache_dir, self.cache_key = cache_dir, cache_key
    self.shard_size, self.k = shard_size, k
    self.query_block, self.cand_block = query_block, cand_block
    self.last_result: MiraclResult | None = None

  @property
  def result(self) -> MiraclResult | None:
    return self.last_result

  def run(self, params) -> Iterator[tuple[str, float]]:
    qids = list(self.topics)
    print(f'{self.eval_name}: {len(qids)} queries ({self.counts["num_judged_topics"]} judged), '
          f'{len(self.docids)} documents, {self.counts["num_judged_pairs"]} judged pairs')
    q = np.asarray(self.predict_fn(params, [self.topics[i] for i in qids], 'query'), np.float32)
    if self.cache_dir:
      key = embedding_cache.cache_key(self.cache_key, params)
      shards = embedding_cache.encode_sharded(
          self.predict_fn, params, self.texts,
          pathlib.Path(self.cache_dir) / self.eval_name / key[:16], key=key,
          shard_size=self.shard_size)
    else:
      shards = [np.asarray(self.predict_fn(params, self.texts[i:i + self.shard_size], 'passage'),
                           np.float32) for i in range(0, len(self.texts), self.shard_size)]
    _, idx = retrieval.top_k(q, shards, self.k, query_block=self.query_block,
                             cand_block=self.cand_block)
    self.last_result = evaluate_topk(idx, self.docids, qids, self.qrels, self.eval_name)
    for name, value in self.last_result.metrics().items():
      yield f'{self.eval_name}/{name}', value


Evaluator = MiraclEvaluator  # the name eval.py / train.py look up in each evaluator module
