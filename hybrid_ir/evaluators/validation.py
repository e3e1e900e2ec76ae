"""Validation on the held-out fold of a training source: InfoNCE loss and LAReQA mAP.

The training source (a `squad` source over a LAReQA set's folder, e.g. ../shared/data/xquad-r,
with `split`: 'train' | 'heldout', `num_folds`, `fold`, `split_seed`; `hybrid_ir.data.squad`)
is split into folds of whole articles linked across languages; training with split 'train'
never sees fold `fold`, and this evaluator measures the model on exactly that fold, in the
source's training languages. Its texts come from the source config alone, never from an
evaluation set, so selecting a checkpoint by it leaves the evaluation set untouched.

What `run(params)` yields ({name} is the eval name, e.g. 'validation'):
  {name}/loss         InfoNCE on fixed held-out batches (`hybrid_ir.losses.info_nce`, in-batch
                      negatives, the training loss's temperature): the mean of loss_mono and
                      loss_cross (the hybrid recipe's even mix of batch types);
  {name}/loss_mono    over `num_batches` batches of one language each (query and passage in it);
  {name}/loss_cross   over `num_batches` batches whose every slot pairs a query with its answer
                      in another language (absent with one training language);
  {name}/acc          in-batch top-1 accuracy over all those batches;
  {name}/mo_map, cr_map, mul_map, rank_distance, ... LAReQA's aggregates
                      (`hybrid_ir.evaluators.lareqa`) with the held-out questions as queries
                      and every sentence of the held-out articles as candidates.
The batches are drawn once, from `seed`, when the evaluator is built: every step is measured
on the same ones, so the values are comparable along training. The embeddings are those of
one encoding of the held-out questions and sentences, shared by the loss and the mAP.

Inputs (a config's `evals` entry: {type: 'validation', source: <the training source config>,
batch_size, temperature, ...}):
  source: the training source's config (kind 'squad', split 'train' or 'heldout', with `path`
    a folder named after its LAReQA set, and `langs`, default all its languages).
  batch_size: examples per loss batch (the training batch size); num_batches: batches per
    batch type (default 8); temperature, symmetric: the training loss's; seed: the batches' draw.
Recommended for: selecting a checkpoint (`hybrid_ir.selection`, the experiment runner) and
early stopping. Related: `heldout_fold`, `hybrid_ir.data.squad.article_folds`, `hybrid_ir.evaluators.lareqa`.
"""
import collections
import dataclasses
import pathlib
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from hybrid_ir.data import lareqa as lareqa_data
from hybrid_ir.data import squad
from hybrid_ir.evaluators import lareqa

PredictFn = Callable[[Any, list[str], str], np.ndarray]
# LAReQA aggregates reported every evaluation; the per-language rows stay in `result`.
_REPORTED = ('mo_map', 'cr_map', 'mul_map', 'mo_r1', 'cr_r1', 'mul_r10', 'rank_distance',
             'num_questions', 'num_candidates')


def heldout_fold(source: Mapping[str, Any]) -> tuple[set[str], set[str]]:
  """(question ids, article keys '<lang>/<article index>') of the source's held-out fold: the
  groups `squad.prepare` leaves out of a split='train' store and puts into a split='heldout'
  one (the same files, folds and seed), and the articles (in every language) they come from.

  Raises ValueError naming the source when it is not a `squad` source with split 'train' or
  'heldout' (split 'all' trains on every article and leaves none out).
  """
  name = source.get('name')
  if source.get('kind') != 'squad':
    raise ValueError(f"validation source {name!r}: kind {source.get('kind')!r}; held-out folds "
                     "exist for kind 'squad' only")
  s = squad.settings(source)
  if s['split'] not in ('train', 'heldout'):
    raise ValueError(f"validation source {name!r}: split {s['split']!r} holds no article out; "
                     "train with split 'train' (num_folds, fold, split_seed) and validate on its "
                     "held-out fold")
  files = squad.language_files(source)
  counts = collections.Counter()
  items = [(qid, v[3]) for lang in s['langs']
           for qid, v in squad.read_squad_file(files[lang], lang, counts)[1].items()]
  folds = squad.article_folds(items, s['num_folds'], s['split_seed'])
  ids = {qid for qid, f in folds.items() if f == s['fold']}
  return ids, {article for qid, article in items if qid in ids}


def _article_of_candidates(data: lareqa_data.LareqaData) -> np.ndarray:
  """[Nc] article index of each candidate within its language's file: candidates are ordered by
  language, article, paragraph and sentence, so an article starts at paragraph 0, sentence 0."""
  start = (data.cand_paragraph == 0) & (data.cand_sentence_idx == 0)
  out = np.empty(data.num_candidates, np.int64)
  for l in range(len(data.langs)):
    idx = np.flatnonzero(data.cand_lang == l)
    out[idx] = np.cumsum(start[idx]) - 1
  return out


def heldout_data(source: Mapping[str, Any]) -> lareqa_data.LareqaData:
  """The LAReQA view of the source's held-out fold in its languages: the held-out questions,
  and every sentence of their articles as candidates (relevance as in LAReQA: the answer
  sentence of each language version). Raises ValueError naming the source when its folder is
  not a LAReQA set's."""
  name, path = source.get('name'), source.get('path')
  folder = pathlib.Path(path or '')
  if source.get('files') or folder.name not in lareqa_data.LANGS:
    raise ValueError(f"validation source {name!r}: `path` must be a LAReQA set's folder (named "
                     f"one of {sorted(lareqa_data.LANGS)}); got path={path!r}"
                     + (' and files' if source.get('files') else ''))
  keep_ids, articles = heldout_fold(source)
  full = lareqa_data.load_lareqa(folder.parent, folder.name, source.get('langs'))
  article = _article_of_candidates(full)
  key = np.array([f'{full.langs[l]}/{a}' for l, a in zip(full.cand_lang.tolist(),
                                                          article.tolist())])
  q_keep = np.array([q in keep_ids for q in full.question_ids], bool)
  c_keep = np.isin(key, sorted(articles))
  new_index = np.where(c_keep, np.cumsum(c_keep) - 1, -1)
  relevant = full.relevant_by_lang[q_keep]
  moved = np.where(relevant >= 0, new_index[np.maximum(relevant, 0)], -1)
  if ((relevant >= 0) & (moved < 0)).any():  # the two readers disagree on the articles
    raise ValueError(f'validation source {name!r}: a held-out question\'s answer sentence lies '
                     f'outside the held-out articles of {folder}')

  def pick(values, keep):
    return [v for v, k in zip(values, keep) if k]

  return dataclasses.replace(
      full, name=f"{folder.name} held-out fold {source.get('fold', 0)}",
      question_ids=pick(full.question_ids, q_keep), question_lang=full.question_lang[q_keep],
      question_text=pick(full.question_text, q_keep), cand_lang=full.cand_lang[c_keep],
      cand_sentence=pick(full.cand_sentence, c_keep), cand_context=pick(full.cand_context, c_keep),
      cand_title=pick(full.cand_title, c_keep), cand_paragraph=full.cand_paragraph[c_keep],
      cand_sentence_idx=full.cand_sentence_idx[c_keep], answer=new_index[full.answer[q_keep]],
      relevant_by_lang=moved)


@dataclasses.dataclass(frozen=True)
class Batch:
  """One loss batch: rows of the question and candidate embeddings; slot i is a pair."""
  kind: str  # 'mono' | 'cross'
  queries: np.ndarray  # [B] question rows
  passages: np.ndarray  # [B] candidate rows (the answer of the same id, in the passage language)
  identities: np.ndarray  # [B] the id's index: translations share a passage identity


def draw_batches(data: lareqa_data.LareqaData, batch_size: int, num_batches: int, seed: int
                 ) -> list[Batch]:
  """`num_batches` mono and (with two or more languages) `num_batches` cross batches of
  `batch_size` distinct ids each, drawn with `seed`. Mono: one language per batch, among those
  with at least batch_size held-out ids. Cross: per slot two distinct languages of its id.
  Raises ValueError naming the sizes when the fold has fewer ids than a batch."""
  ids = sorted(set(data.question_ids))
  index = {q: i for i, q in enumerate(ids)}
  row = np.full((len(ids), len(data.langs)), -1, np.int64)  # question row of (id, language)
  row[[index[q] for q in data.question_ids], data.question_lang] = np.arange(data.num_questions)
  rng = np.random.default_rng(seed)
  out = []
  mono_langs = [l for l in range(len(data.langs)) if (row[:, l] >= 0).sum() >= batch_size]
  if not mono_langs:
    raise ValueError(f'{data.name}: no language has batch_size={batch_size} held-out questions '
                     f'(at most {int((row >= 0).sum(0).max(initial=0))}); lower the batch size '
                     'or hold out a larger fold (fewer num_folds)')
  for _ in range(num_batches):
    lang = mono_langs[rng.integers(len(mono_langs))]
    pick = rng.choice(np.flatnonzero(row[:, lang] >= 0), batch_size, replace=False)
    q = row[pick, lang]
    out.append(Batch('mono', q, data.answer[q], pick))
  several = np.flatnonzero((row >= 0).sum(1) >= 2)
  if len(data.langs) > 1 and len(several) < batch_size:
    raise ValueError(f'{data.name}: {len(several)} held-out questions have two languages, fewer '
                     f'than batch_size={batch_size}')
  for _ in range(num_batches if len(data.langs) > 1 else 0):
    pick = rng.choice(several, batch_size, replace=False)
    pairs = [rng.choice(np.flatnonzero(row[i] >= 0), 2, replace=False) for i in pick]
    q = np.array([row[i, x] for i, (x, _) in zip(pick, pairs)])
    p = np.array([data.answer[row[i, y]] for i, (_, y) in zip(pick, pairs)])
    out.append(Batch('cross', q, p, pick))
  return out


class ValidationEvaluator:
  """Held-out InfoNCE loss and LAReQA mAP of a training source's held-out fold (module
  docstring). predict_fn: (params, texts, kind) -> [N, D] L2-normalised, kind 'query' or
  'passage' (as for `hybrid_ir.evaluators.lareqa.LareqaEvaluator`). After `run`, `result`
  holds the held-out `LareqaResult` (eval.py writes its JSON and table)."""

  def __init__(self, predict_fn: PredictFn, source: Mapping[str, Any], batch_size: int = 32,
               num_batches: int = 8, temperature: float = 0.05, symmetric: bool = False,
               seed: int = 0, name: str = 'validation'):
    self.predict_fn = predict_fn
    self.data = heldout_data(dict(source))
    self.batches = draw_batches(self.data, int(batch_size), int(num_batches), int(seed))
    self.temperature, self.symmetric = float(temperature), bool(symmetric)
    self.eval_name = name
    self.result: lareqa.LareqaResult | None = None

  def _encode(self, params, texts: list[str], kind: str) -> np.ndarray:
    emb = np.asarray(self.predict_fn(params, texts, kind), np.float32)
    if emb.shape[0] != len(texts):
      raise ValueError(f'predict_fn returned {emb.shape[0]} {kind} embeddings for {len(texts)} '
                       'texts')
    return emb

  def losses(self, query_emb: np.ndarray, cand_emb: np.ndarray) -> dict[str, float]:
    """{'loss', 'loss_mono', ['loss_cross'], 'acc'} on the fixed batches, from the embeddings
    of the held-out questions and candidates (in `data`'s order)."""
    from hybrid_ir import losses  # jax: only when measuring
    by_kind, accs = collections.defaultdict(list), []
    for b in self.batches:
      loss, m = losses.info_nce(query_emb[b.queries], cand_emb[b.passages],
                                temperature=self.temperature, symmetric=self.symmetric,
                                identities=b.identities)
      by_kind[b.kind].append(float(loss))
      accs.append(float(m['acc_q2p']))
    out = {f'loss_{k}': float(np.mean(v)) for k, v in by_kind.items()}
    out['loss'] = float(np.mean(list(out.values())))
    out['acc'] = float(np.mean(accs))
    return out

  def run(self, params) -> Iterator[tuple[str, float]]:
    d = self.data
    q = self._encode(params, list(d.question_text), 'query')
    c = self._encode(params, d.cand_text, 'passage')
    for k, v in self.losses(q, c).items():
      yield f'{self.eval_name}/{k}', v
    self.result = lareqa.evaluate_embeddings(d, q, c)
    metrics = self.result.metrics()
    for k in _REPORTED:
      yield f'{self.eval_name}/{k}', metrics[k]


Evaluator = ValidationEvaluator  # the name the evaluator registry looks up
