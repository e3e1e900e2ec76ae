"""LAReQA evaluation (XQuAD-R, MLQA-R): Mo / Cr / Mul mAP, R@1, R@10 and rank distance.

Settings (the paper, arXiv 2408.10536, after Roy et al. 2020):
  Mo  (X->X): queries in X ranked against X's candidates only (11 / 7 settings).
  Cr  (X->Y, X != Y): queries in X against Y's candidates only (110 / 42 settings); the one relevant
      item is the answer sentence of the question id's Y version.
  Mul: queries in X against one pool of every language's candidates; all language versions'
      answer sentences are relevant.
One `retrieval.rank_relevant` pass over the full pool gives all of them: a candidate's rank among
its own language's candidates is its rank in the X->Y setting (same scores, same tie rule).

Aggregation: per-query values are kept. A setting's value is the mean over its queries; Mo and Cr
are macro-averaged over their settings (language pairs), Mul and rank distance over query
languages. MLQA-R questions whose id has no version in Y have no relevant item in X->Y: they are
excluded from that setting and counted (`num_excluded`, per pair in `excluded`).

Metric names yielded by `LareqaEvaluator.run` ({name} is the dataset, e.g. 'xquad-r'):
  {name}/mo_map, cr_map, mul_map, mo_map@20, cr_map@20, mul_map@20, mo_r1, cr_r1, mul_r10,
  mul_recall10 (= mul_r10), mul_success10, rank_distance, num_questions, num_candidates,
  num_relevant_pairs, num_excluded; per query language {name}/{lang}/{mo_map, cr_map, mul_map,
  mo_r1, cr_r1, mul_r10, rank_distance}; and the matrix {name}/map/{X}-{Y}.
Metric definitions (AP, AP@20, R@k, rank distance): `hybrid_ir.evaluators.metrics`.
"""
import dataclasses
import hashlib
import json
import logging
import pathlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from hybrid_ir.data import lareqa as lareqa_data
from hybrid_ir.evaluators import embedding_cache
from hybrid_ir.evaluators import metrics

PredictFn = Callable[[Any, list[str], str], np.ndarray]
_MEAN_KEYS = ('map', 'map@20', 'r1')


def _nanmean(x: np.ndarray) -> float:
  x = np.asarray(x, np.float64)
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float('nan')


@dataclasses.dataclass
class LareqaResult:
  """Per-query LAReQA results for one dataset, with the aggregates derived from them.

  Per-query arrays (Nq questions, L languages; NaN where a setting has no relevant item):
    pair_ap, pair_ap20, pair_r1: [Nq, L] value of query q in setting lang(q) -> Y (column Y);
      the diagonal column lang(q) is the Mo setting.
    pair_ranks: [Nq, L] rank of the Y answer among Y's candidates (0 = none).
    mul_ranks: [Nq, L] rank of the Y answer in the multilingual pool (0 = none).
    mul_ap, mul_ap20, mul_r10, mul_success10, rank_distance: [Nq] Mul values.
  """
  dataset: str
  langs: tuple[str, ...]
  question_ids: list[str]
  question_lang: np.ndarray
  num_candidates: int
  pair_ranks: np.ndarray
  mul_ranks: np.ndarray
  pair_ap: np.ndarray
  pair_ap20: np.ndarray
  pair_r1: np.ndarray
  mul_ap: np.ndarray
  mul_ap20: np.ndarray
  mul_r10: np.ndarray
  mul_success10: np.ndarray
  rank_distance: np.ndarray
  mul_topk: np.ndarray

  @property
  def num_questions(self) -> int:
    return len(self.question_ids)

  @property
  def num_relevant_pairs(self) -> int:
    return int((self.mul_ranks > 0).sum())

  @property
  def excluded(self) -> np.ndarray:
    """[L, L] number of X-queries with no relevant item in language Y (excluded from X->Y)."""
    out = np.zeros((len(self.langs),) * 2, np.int64)
    np.add.at(out, self.question_lang, (self.pair_ranks == 0).astype(np.int64))
    return out

  @property
  def num_excluded(self) -> int:
    return int(self.excluded.sum())

  def matrix(self, metric: str = 'map') -> np.ndarray:
    """[L, L] mean over the X-queries of the X->Y setting; metric in 'map', 'map@20', 'r1'."""
    vals = {'map': self.pair_ap, 'map@20': self.pair_ap20, 'r1': self.pair_r1}[metric]
    nl = len(self.langs)
    return np.array([[_nanmean(vals[self.question_lang == x, y]) for y in range(nl)]
                     for x in range(nl)])

  def _per_lang(self, values: np.ndarray) -> np.ndarray:
    return np.array([_nanmean(values[self.question_lang == x]) for x in range(len(self.langs))])

  def metrics(self) -> dict[str, float]:
    """Aggregates (unprefixed names; see the module docstring)."""
    out: dict[str, float] = {}
    nl = len(self.langs)
    off = ~np.eye(nl, dtype=bool)
    for key, suffix in (('map', 'map'), ('map@20', 'map@20'), ('r1', 'r1')):
      m = self.matrix(key)
      out[f'mo_{suffix}'] = _nanmean(np.diag(m))
      # Pairs with no query at all (possible with a language subset of MLQA-R) are NaN, skipped.
      out[f'cr_{suffix}'] = _nanmean(m[off]) if nl > 1 else float('nan')
    out['mul_map'] = _nanmean(self._per_lang(self.mul_ap))
    out['mul_map@20'] = _nanmean(self._per_lang(self.mul_ap20))
    out['mul_r10'] = out['mul_recall10'] = _nanmean(self._per_lang(self.mul_r10))
    out['mul_success10'] = _nanmean(self._per_lang(self.mul_success10))
    out['rank_distance'] = _nanmean(self._per_lang(self.rank_distance))
    out['num_questions'] = self.num_questions
    out['num_candidates'] = self.num_candidates
    out['num_relevant_pairs'] = self.num_relevant_pairs
    out['num_excluded'] = self.num_excluded
    return out

  def language_metrics(self) -> dict[str, dict[str, float]]:
    """Per query language X: Mo, Cr (mean over Y != X), Mul and rank distance."""
    m, r1 = self.matrix('map'), self.matrix('r1')
    nl = len(self.langs)
    rows = {}
    for x, lang in enumerate(self.langs):
      others = [y for y in range(nl) if y != x]
      rows[lang] = {
          'mo_map': float(m[x, x]), 'cr_map': _nanmean(m[x, others]) if others else float('nan'),
          'mul_map': float(self._per_lang(self.mul_ap)[x]),
          'mo_r1': float(r1[x, x]), 'cr_r1': _nanmean(r1[x, others]) if others else float('nan'),
          'mul_r10': float(self._per_lang(self.mul_r10)[x]),
          'rank_distance': float(self._per_lang(self.rank_distance)[x]),
          'num_questions': int((self.question_lang == x).sum()),
      }
    return rows

  def per_query(self, metric: str) -> np.ndarray:
    """One value per question for paired tests and CIs (`hybrid_ir.evaluators.stats`), such that
    its macro average over query languages is the reported figure (see `query_vectors`).

    metric: 'mo_map', 'mo_map@20', 'mo_r1', 'cr_map', 'cr_map@20', 'cr_r1', 'mul_map',
    'mul_map@20', 'mul_r10', 'rank_distance'. Two results of the same dataset give aligned
    vectors; NaN where a question has no relevant item in the setting.
    """
    setting, _, key = metric.partition('_')
    pair = {'map': self.pair_ap, 'map@20': self.pair_ap20, 'r1': self.pair_r1}
    if setting in ('mo', 'cr') and key in pair:
      mo, cr = query_vectors(pair[key], self.question_lang, len(self.langs))
      return mo if setting == 'mo' else cr
    table = {'mul_map': self.mul_ap, 'mul_map@20': self.mul_ap20, 'mul_r10': self.mul_r10,
             'rank_distance': self.rank_distance}
    if metric not in table:
      raise ValueError(f'unknown per-query metric {metric!r}; known: mo_/cr_ + map, map@20, r1; '
                       f'{", ".join(table)}')
    return np.asarray(table[metric], np.float64)

  def table(self, label: str | None = None) -> str:
    """Markdown: the paper's summary row (named `label`), then one row per language."""
    return format_table({label or self.dataset: self}) + '\n\n' + format_language_table(self)

  def named_metrics(self, prefix: str | None = None) -> Iterator[tuple[str, float]]:
    """(name, value) pairs: aggregates, per-language rows and the Mo/Cr mAP matrix."""
    p = prefix or self.dataset
    for k, v in self.metrics().items():
      yield f'{p}/{k}', v
    for lang, row in self.language_metrics().items():
      for k, v in row.items():
        yield f'{p}/{lang}/{k}', v
    m = self.matrix('map')
    for x, lx in enumerate(self.langs):
      for y, ly in enumerate(self.langs):
        yield f'{p}/map/{lx}-{ly}', float(m[x, y])

  def to_json(self) -> dict:
    """JSON-ready dict: counts, aggregates, per-language rows, matrices and per-query arrays."""
    def arr(x):
      x = np.asarray(x)
      return np.where(np.isnan(x), None, x).tolist() if x.dtype.kind == 'f' else x.tolist()
    return {
        'dataset': self.dataset, 'langs': list(self.langs),
        'counts': {'num_questions': self.num_questions, 'num_candidates': self.num_candidates,
                   'num_relevant_pairs': self.num_relevant_pairs,
                   'num_excluded': self.num_excluded, 'excluded': arr(self.excluded)},
        'metrics': self.metrics(), 'languages': self.language_metrics(),
        'matrix': {k: arr(self.matrix(k)) for k in _MEAN_KEYS},
        'per_query': {
            'question_id': list(self.question_ids), 'lang': [self.langs[i] for i in self.question_lang],
            'pair_ranks': arr(self.pair_ranks), 'mul_ranks': arr(self.mul_ranks),
            'pair_ap': arr(self.pair_ap), 'pair_ap20': arr(self.pair_ap20),
            'mul_ap': arr(self.mul_ap), 'mul_ap20': arr(self.mul_ap20), 'mul_r10': arr(self.mul_r10),
            'mul_success10': arr(self.mul_success10), 'rank_distance': arr(self.rank_distance),
            'mul_top10': arr(self.mul_topk)},
    }


def query_vectors(pair_values: np.ndarray, question_lang: np.ndarray, num_langs: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Per-question Mo and Cr values [Nq] from per-setting values [Nq, L] (column Y: the question's
  X->Y value, NaN where Y has no relevant item), the one definition of LAReQA's per-query units.

  Mo: the question's own-language column. Cr: the query is the resampling unit, since its
  settings X->Y are not independent, so question q of language X gets
    v_q = sum over its other languages Y of value(q, X->Y) * n_X / (n_XY * P_X),
  n_X counting X's questions, n_XY those with a relevant item in Y and P_X the settings X->Y that
  have any. Then the mean over X's questions of v_q is the mean over X's settings of each
  setting's mean, and the macro average over X is the reported Cr figure (the macro average over
  all settings, when every X has the same number of them, as on full XQuAD-R and MLQA-R).
  Recommended for: `LareqaResult.per_query`, `per_query_vectors` (the report's JSON input).
  """
  values = np.asarray(pair_values, np.float64)
  q_lang = np.asarray(question_lang)
  own = np.zeros(values.shape, bool)
  own[np.arange(len(q_lang)), q_lang] = True
  mo = values[own]
  others = np.where(own, np.nan, values)
  valid = ~np.isnan(others)
  onehot = np.eye(num_langs)[q_lang]  # [Nq, L]
  n_x = onehot.sum(0)  # [L]
  n_xy = onehot.T @ valid  # [L, L]
  p_x = (n_xy > 0).sum(1)  # [L]
  with np.errstate(divide='ignore', invalid='ignore'):
    w = n_x[q_lang, None] / (n_xy[q_lang] * p_x[q_lang, None])
  cr = np.where(valid, np.nan_to_num(others) * np.where(valid, w, 0.0), 0.0).sum(1)
  if num_langs == 1:
    cr = np.full(len(q_lang), np.nan)
  return mo, cr


def per_query_vectors(details: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """{'lang', 'mo_map', 'cr_map', 'mul_map', 'rank_distance'} per question, from a
  `LareqaResult.to_json()` dict (what eval.py writes): the vectors of `LareqaResult.per_query`."""
  pq, langs = details['per_query'], list(details['langs'])
  q_lang = np.array([langs.index(l) for l in pq['lang']])
  pair_ap = np.array(pq['pair_ap'], dtype=np.float64)  # None -> nan: no relevant item in Y
  mo, cr = query_vectors(pair_ap, q_lang, len(langs))
  return {'lang': np.array(pq['lang']), 'mo_map': mo, 'cr_map': cr,
          'mul_map': np.array(pq['mul_ap'], np.float64),
          'rank_distance': np.array(pq['rank_distance'], np.float64)}


def evaluate_embeddings(dataset: lareqa_data.LareqaData, query_emb: np.ndarray,
                        cand_emb: np.ndarray, *, query_block: int | None = None) -> LareqaResult:
  """All LAReQA metrics from precomputed embeddings (pure; what tests and benchmarks use).

  Inputs: dataset from `load_lareqa`; query_emb [Nq, D] and cand_emb [Nc, D], L2-normalised, in
  the dataset's question / candidate order.
  """
  if len(query_emb) != dataset.num_questions or len(cand_emb) != dataset.num_candidates:
    raise ValueError(f'{dataset.name}: got {len(query_emb)} query / {len(cand_emb)} candidate '
                     f'embeddings for {dataset.num_questions} questions / '
                     f'{dataset.num_candidates} candidates')
  from hybrid_ir import retrieval  # jax: only to rank (the report reads results without it)
  rel = dataset.relevant_by_lang
  ranking = retrieval.rank_relevant(query_emb, cand_emb, rel, cand_groups=dataset.cand_lang,
                                    k=10, query_block=query_block)
  # Column Y of relevant_by_lang lies in language Y, so its rank within its own group (language)
  # is the query's rank in the lang(q) -> Y setting.
  pair_ranks = ranking.group_ranks
  has = pair_ranks > 0
  with np.errstate(divide='ignore'):
    pair_ap = np.where(has, 1.0 / np.where(has, pair_ranks, 1), np.nan)  # one relevant: AP = 1/r
  pair_ap20 = np.where(has, np.where(pair_ranks <= 20, pair_ap, 0.0), np.nan)
  pair_r1 = np.where(has, (pair_ranks == 1).astype(np.float64), np.nan)
  mul = ranking.ranks
  result = LareqaResult(
      dataset=dataset.name, langs=dataset.langs, question_ids=list(dataset.question_ids),
      question_lang=dataset.question_lang, num_candidates=dataset.num_candidates,
      pair_ranks=pair_ranks, mul_ranks=mul, pair_ap=pair_ap, pair_ap20=pair_ap20, pair_r1=pair_r1,
      mul_ap=metrics.average_precision(mul), mul_ap20=metrics.average_precision(mul, k=20),
      mul_r10=metrics.recall_at(mul, 10), mul_success10=metrics.success_at(mul, 10),
      rank_distance=metrics.rank_distance(mul), mul_topk=ranking.topk_indices)
  logging.info('%s: used %d questions, %d candidates, %d relevant pairs; %d (question, language) '
               'pairs excluded for lack of a relevant item', dataset.name, result.num_questions,
               result.num_candidates, result.num_relevant_pairs, result.num_excluded)
  return result


class LareqaEvaluator:
  """Encodes a LAReQA set with `predict_fn` and yields its metrics.

  Inputs:
    predict_fn: (params, texts, kind) -> [N, D] L2-normalised float array, kind in
      {'query', 'passage'} (typically functools.partial(encoder.encode, ...)).
    dataset: 'xquad-r' or 'mlqa-r'; data_dir: the folder holding it (../shared/data).
    langs: language subset (default all); candidate_text: 'sentence' or 'sentence+context'.
    batch_size: texts per predict_fn call (None: all texts of a kind in one call, recommended
      when predict_fn batches by itself, as encoder.encode does, so it shows one progress bar).
    cache_dir / cache_key: optional embedding cache (.npy). cache_key names the encoding settings
      (e.g. the model config: prefixes, pooling, buckets); an entry's name adds the fingerprint
      of the params given to `run` (`embedding_cache.cache_key`), so each checkpoint gets its
      own and a stale cache never reports another model's numbers.
    eval_name (alias name): metric-name prefix (default the dataset name).
  After `run`, `result` (alias `last_result`) holds the `LareqaResult` (per-query arrays,
  `to_json()`, `table()`).
  """

  def __init__(self, predict_fn: PredictFn, dataset: str = 'xquad-r', data_dir: str = '',
               langs: Sequence[str] | None = None, candidate_text: str = 'sentence',
               batch_size: int | None = None, cache_dir: str | None = None,
               cache_key: str | None = None, eval_name: str | None = None,
               name: str | None = None):
    if cache_dir and not cache_key:
      raise ValueError('LareqaEvaluator: cache_dir needs a cache_key naming the encoding settings')
    self.predict_fn = predict_fn
    self.data = lareqa_data.load_lareqa(data_dir, dataset, langs, candidate_text)
    self.batch_size = batch_size
    self.cache_dir = pathlib.Path(cache_dir) if cache_dir else None
    self.cache_key = cache_key
    self.eval_name = eval_name or name or dataset
    self.last_result: LareqaResult | None = None

  @property
  def result(self) -> LareqaResult | None:
    return self.last_result

  def _encode(self, params, texts: list[str], kind: str, key: str | None = None) -> np.ndarray:
    path = None
    if self.cache_dir is not None:
      h = hashlib.sha1(json.dumps([key, kind, texts]).encode()).hexdigest()[:16]
      path = self.cache_dir / f'{self.data.name}-{kind}-{h}.npy'
      if path.is_file():
        logging.info('%s: loading cached %s embeddings from %s', self.data.name, kind, path)
        return np.load(path)
    step = self.batch_size or max(len(texts), 1)
    emb = np.concatenate([np.asarray(self.predict_fn(params, texts[i:i + step], kind), np.float32)
                          for i in range(0, len(texts), step)])
    if emb.shape[0] != len(texts):
      raise ValueError(f'predict_fn returned {emb.shape[0]} {kind} embeddings for {len(texts)} texts')
    if path is not None:
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.with_suffix('.tmp.npy')
      np.save(tmp, emb)
      tmp.rename(path)  # atomic: a killed run never leaves a truncated cache file
    return emb

  def run(self, params) -> Iterator[tuple[str, float]]:
    d = self.data
    print(f'{self.eval_name}: {d.num_questions} questions, {d.num_candidates} candidates, '
          f'{d.num_relevant_pairs} relevant pairs')
    # The cache entry is named by the encoding settings and the params themselves, so another
    # checkpoint never reads this one's embeddings.
    key = embedding_cache.cache_key(self.cache_key, params) if self.cache_dir else None
    q = self._encode(params, list(d.question_text), 'query', key)
    c = self._encode(params, d.cand_text, 'passage', key)
    self.last_result = evaluate_embeddings(d, q, c)
    excluded = self.last_result.excluded
    if excluded.sum():
      mo = int(np.trace(excluded))
      print(f'{self.eval_name}: {int(excluded.sum()) - mo} (question, language) pairs have no '
            f'relevant item in that language and are left out of their X->Y (Cr) setting'
            + (f', {mo} out of Mo' if mo else ''))
    yield from self.last_result.named_metrics(self.eval_name)


def format_metric(x: float | None, key: str) -> str:
  """A metric as the tables print it: rank distance to 0.1, the others to 0.001, and '—' for a
  missing value (None, or NaN where no setting had a query). Used by `format_table` and the
  report's tables."""
  if x is None or x != x:
    return '—'
  return f'{x:.1f}' if key == 'rank_distance' else f'{x:.3f}'


def format_table(results: Mapping[str, LareqaResult | Sequence[LareqaResult]]) -> str:
  """Markdown table shaped like the paper's: one row per run, per dataset Mo/Cr/Mul mAP, Mo/Cr R@1,
  Mul R@10 and rank distance. `results` maps a run name to one result or several (datasets)."""
  rows = {name: ([r] if isinstance(r, LareqaResult) else list(r)) for name, r in results.items()}
  datasets = []
  for rs in rows.values():
    for r in rs:
      if r.dataset not in datasets:
        datasets.append(r.dataset)
  cols = ['Mo', 'Cr', 'Mul', 'Mo R@1', 'Cr R@1', 'Mul R@10', 'rank dist.']
  keys = ['mo_map', 'cr_map', 'mul_map', 'mo_r1', 'cr_r1', 'mul_r10', 'rank_distance']
  pretty = {'xquad-r': 'XQuAD-R', 'mlqa-r': 'MLQA-R'}
  header = ['model'] + [f'{pretty.get(ds, ds)} {c}' if i == 0 else c for ds in datasets
                        for i, c in enumerate(cols)]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name, rs in rows.items():
    by_ds = {r.dataset: r.metrics() for r in rs}
    cells = [name]
    for ds in datasets:
      m = by_ds.get(ds)
      cells += [format_metric(m[k], k) if m else '' for k in keys]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def format_language_table(result: LareqaResult) -> str:
  """Markdown table, one row per query language: Mo, Cr, Mul mAP, R@1, R@10, rank distance."""
  keys = ['mo_map', 'cr_map', 'mul_map', 'mo_r1', 'cr_r1', 'mul_r10', 'rank_distance']
  lines = [f'| {result.dataset} | ' + ' | '.join(keys) + ' | questions |',
           '|' + '---|' * (len(keys) + 2)]
  for lang, row in result.language_metrics().items():
    lines.append(f'| {lang} | ' + ' | '.join(format_metric(row[k], k) for k in keys) +
                 f' | {row["num_questions"]} |')
  m = result.metrics()
  lines.append('| macro | ' + ' | '.join(format_metric(m[k], k) for k in keys) + f' | {result.num_questions} |')
  return '\n'.join(lines)


Evaluator = LareqaEvaluator  # the name eval.py / train.py look up in each evaluator module
