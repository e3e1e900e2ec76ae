"""SQuAD-format parallel QA -> a training store, with leak-free article-level splits.

Reads one SQuAD v1.1/v2.0 JSON file per language: the paper's machine-translated QA data, and
the LAReQA sets (XQuAD-R, MLQA-R in ../shared/data) used as *training* data. The question `id`
is the group: parallel versions of a question share it across languages.

Source config: `path` (a folder of <lang>.json) or `files` ({lang: path}); optional `split`
('all' | 'train' | 'heldout'), `num_folds` (5), `fold` (0), `split_seed` (0).

Passages: with LAReQA's `sentences` / `sentence_breaks` ([start, end) character offsets into
`context`) every sentence is a passage and a question's positive is its answer sentence (start
<= answer_start < end; the text from `sentences`, since one XQuAD-R `tr` context has mojibake);
its hard negatives are the other sentences of that paragraph, the distractors LAReQA's
evaluation is made of. Plain SQuAD files without sentence breaks: the paragraph is the passage
and the article's other paragraphs are the negatives (counted as 'paragraph passages'). The first
answer is used. Passage identity: positives of one question id in any language, and sentences of
one language with the same normalised text (so two questions whose answers share a sentence, or
its translation, are never in-batch negatives of each other).

Skipped, counted per language: SQuAD v2 unanswerable questions (`is_impossible`). Anything else
malformed raises with the file and the JSON path of the offending item.

Splits: `article_folds` puts whole articles into folds, linked across languages through shared
question ids, so a held-out fold holds every translation of its questions.
"""
import collections
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from hybrid_ir.data import store as store_lib
from hybrid_ir.data import text_files


def answer_sentence(breaks: Sequence[Sequence[int]], start: int, where: str) -> int:
  """Index of the sentence [b, e) with b <= start < e; raises unless exactly one holds it.

  The end is exclusive: an inclusive end gives two sentences for ~30 LAReQA questions.
  """
  hits = [i for i, (b, e) in enumerate(breaks) if b <= start < e]
  if len(hits) != 1:
    raise ValueError(f'{where}: answer_start {start} lies in {len(hits)} sentences of '
                     f'sentence_breaks {breaks}; expected exactly 1')
  return hits[0]


def _field(obj, key, typ, where):
  if not isinstance(obj, dict) or key not in obj:
    raise ValueError(f'{where}: missing field {key!r}')
  if not isinstance(obj[key], typ):
    raise ValueError(f'{where}.{key}: expected {typ.__name__}, got {obj[key]!r:.80}')
  return obj[key]


def _text(obj, key, where) -> str:
  value = _field(obj, key, str, where)
  if not value.strip():
    raise ValueError(f'{where}.{key}: empty text')
  return value


def read_squad_file(path: str | os.PathLike, lang: str, counts: collections.Counter
                    ) -> tuple[list[str], dict[str, tuple[int, int, list[int], str]]]:
  """Reads one language's file into (texts, questions).

  texts: the language's text rows (questions and passages). questions: id -> (query row,
  positive row, negative rows, article key '<lang>/<article index>').
  """
  path = str(path)
  data = text_files.load_json(path)
  if not isinstance(data, dict) or not isinstance(data.get('data'), list):
    raise ValueError(f"{path}: not SQuAD format: expected an object with a 'data' list")
  texts, questions = [], {}
  for a, article in enumerate(data['data']):
    article_rows, pending = [], []  # paragraph mode: negatives need every paragraph first
    for p, para in enumerate(_field(article, 'paragraphs', list, f'{path}: data[{a}]')):
      where_p = f'{path}: data[{a}].paragraphs[{p}]'
      context = _text(para, 'context', where_p)
      sentences, breaks = para.get('sentences'), para.get('sentence_breaks')
      if (sentences is None) != (breaks is None):
        raise ValueError(f'{where_p}: has only one of sentences / sentence_breaks')
      if sentences is not None:
        if len(sentences) != len(breaks):
          raise ValueError(f'{where_p}: {len(sentences)} sentences but {len(breaks)} '
                           'sentence_breaks')
        for s, sentence in enumerate(sentences):
          if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f'{where_p}.sentences[{s}]: empty text')
        rows = list(range(len(texts), len(texts) + len(sentences)))
        texts.extend(sentences)
      else:
        rows = [len(texts)]
        texts.append(context)
        article_rows.append(rows[0])
      for q, qa in enumerate(_field(para, 'qas', list, where_p)):
        where = f'{where_p}.qas[{q}]'
        qid = _field(qa, 'id', str, where)
        if qid in questions:
          raise ValueError(f'{where}: duplicate question id {qid!r}')
        answers = qa.get('answers') or []
        if not answers:
          if qa.get('is_impossible'):
            counts['unanswerable (skipped)'] += 1
            continue
          raise ValueError(f'{where}: question {qid!r} has no answers')
        if len(answers) > 1:
          counts['several answers (first used)'] += 1
        start = answers[0].get('answer_start') if isinstance(answers[0], dict) else None
        if not isinstance(start, int) or not 0 <= start < len(context):
          raise ValueError(f'{where}: answers[0].answer_start {start!r} outside the context '
                           f'(length {len(context)})')
        query_row = len(texts)
        texts.append(_text(qa, 'question', where))
        if sentences is None:
          counts['paragraph passages (no sentence_breaks)'] += 1
          pending.append(qid)
          questions[qid] = (query_row, rows[0], [], f'{lang}/{a}')
        else:
          pos = rows[answer_sentence(breaks, start, where)]
          questions[qid] = (query_row, pos, [r for r in rows if r != pos], f'{lang}/{a}')
        counts['questions'] += 1
    for qid in pending:
      q_row, pos, negs, key = questions[qid]
      negs.extend(r for r in article_rows if r != pos)
  return texts, questions


def article_folds(items: Sequence[tuple[str, str]], num_folds: int, seed: int) -> dict[str, int]:
  """Assigns every group id to a fold so that articles are never split.

  Inputs: (group_id, article_key) pairs from all languages; the number of folds; a seed.
  Articles sharing any group id (across languages) form one component; components are
  shuffled with `seed` and dealt round-robin to folds, so folds are deterministic and
  roughly equal in number of articles.
  """
  if num_folds < 2:
    raise ValueError(f'article_folds: num_folds must be >= 2, got {num_folds}')
  groups = sorted({g for g, _ in items})
  articles = sorted({a for _, a in items})
  g_index = {g: i for i, g in enumerate(groups)}
  a_index = {a: len(groups) + i for i, a in enumerate(articles)}
  edges = np.array([(g_index[g], a_index[a]) for g, a in items], np.int64).reshape(-1, 2)
  comp = store_lib.components(len(groups) + len(articles), edges[:, 0], edges[:, 1])
  roots = sorted(set(comp[len(groups):].tolist()))
  if len(roots) < num_folds:
    raise ValueError(f'article_folds: {len(roots)} linked article groups, fewer than '
                     f'num_folds={num_folds}')
  order = np.random.default_rng(seed).permutation(len(roots))
  fold_of_root = {roots[i]: k % num_folds for k, i in enumerate(order)}
  return {g: fold_of_root[int(comp[g_index[g]])] for g in groups}


def language_files(cfg: Any) -> dict[str, pathlib.Path]:
  """{lang: file} from `files` ({lang: path}) or `path` (a folder of <lang>.json)."""
  files = cfg.get('files')
  if files:
    return {str(l): pathlib.Path(p) for l, p in dict(files).items()}
  directory = cfg.get('path')
  if not directory or not pathlib.Path(directory).is_dir():
    raise ValueError(f'source {cfg.get("name")!r} (squad): `path` {directory!r} is not a '
                     'directory; give `path` (a folder of <lang>.json) or `files` {lang: path}')
  paths = {p.stem: p for p in sorted(pathlib.Path(directory).glob('*.json'))}
  if not paths:
    raise ValueError(f'source {cfg.get("name")!r} (squad): no <lang>.json files in {directory}')
  return paths


def inputs(cfg: Any) -> list[str]:
  return [str(p) for _, p in sorted(language_files(cfg).items())]


def settings(cfg: Any) -> dict[str, Any]:
  split = cfg.get('split', 'all')
  if split not in ('all', 'train', 'heldout'):
    raise ValueError(f"source {cfg.get('name')!r}: split must be 'all', 'train' or 'heldout', "
                     f'got {split!r}')
  out = {'langs': sorted(language_files(cfg)), 'split': split}
  if split != 'all':
    out.update(num_folds=int(cfg.get('num_folds', 5)), fold=int(cfg.get('fold', 0)),
               split_seed=int(cfg.get('split_seed', 0)))
    if not 0 <= out['fold'] < out['num_folds']:
      raise ValueError(f'source {cfg.get("name")!r}: fold {out["fold"]} not in '
                       f'[0, {out["num_folds"]})')
  return out


def prepare(cfg: Any, builder: store_lib.Builder, workers: int) -> store_lib.Store:
  """Reads every language file and writes the store (small data: done in this process)."""
  del workers
  s = settings(cfg)
  files = language_files(cfg)
  langs = s['langs']
  counts = {l: collections.Counter() for l in langs}
  parsed = {l: read_squad_file(files[l], l, counts[l]) for l in langs}
  qids = sorted({q for _, questions in parsed.values() for q in questions})
  if s['split'] != 'all':
    folds = article_folds([(q, v[3]) for _, questions in parsed.values()
                           for q, v in questions.items()], s['num_folds'], s['split_seed'])
    keep = (lambda f: f != s['fold']) if s['split'] == 'train' else (lambda f: f == s['fold'])
    qids = [q for q in qids if keep(folds[q])]
  group = {q: i for i, q in enumerate(qids)}
  group_query, group_positive, negatives = {}, {}, {}
  for l in langs:
    texts, questions = parsed[l]
    gq = np.full(len(qids), -1, np.int32)
    gp = np.full(len(qids), -1, np.int32)
    negs = [[] for _ in qids]
    for q, (q_row, pos, neg, _) in questions.items():
      if q in group:
        g = group[q]
        gq[g], gp[g], negs[g] = q_row, pos, neg
    counts[l]['groups'] = int((gq >= 0).sum())
    group_query[l], group_positive[l], negatives[l] = gq, gp, negs
  return store_lib.write_tables(
      builder, langs=langs, group_ids=qids, texts={l: parsed[l][0] for l in langs},
      group_query=group_query, group_positive=group_positive, negatives=negatives,
      same_text=True, counts={l: dict(c) for l, c in counts.items()})
