"""SQuAD-format parallel QA as training records, with leak-free article-level splits.

Reads one SQuAD v1.1/v2.0 JSON file per language: the paper's machine-translated QA data,
and the LAReQA sets (XQuAD-R, MLQA-R in ../shared/data) used as *training* data. The question
`id` is the group id: parallel versions of a question share it across languages.

Positive passage: the answer sentence when the paragraph has LAReQA's `sentences` and
`sentence_breaks` ([start, end) character offsets into `context`): the sentence with
start <= answer_start < end, its text taken from `sentences` (one XQuAD-R `tr` context has
mojibake, its `sentences` do not). Fallback for plain SQuAD files without sentence breaks:
the whole paragraph (`context`), counted and logged as 'paragraph_fallback'. The first answer
is used (SQuAD dev lists several spans of one answer).

Skipped, counted per language: SQuAD v2 unanswerable questions (`is_impossible` true).
Anything else malformed raises with the file and the JSON path of the offending item.

Splits: `article_folds` puts whole articles into folds. Articles are linked across languages
through shared question ids (union-find), so a held-out fold holds every translation of its
questions even where article boundaries differ between languages (MLQA-R).
"""
import json
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from hybrid_ir.data import records as records_lib

Record = records_lib.Record


def read_squad_file(path: str | os.PathLike, lang: str,
                    counts: records_lib.Counts | None = None) -> list[tuple[Record, str]]:
  """Reads one language's SQuAD-format file.

  Inputs: the JSON path and its language code; optional `Counts` to add read/skip counts to.
  Returns (record, article_key) pairs; article_key is '<lang>/<article index>'.
  """
  path = str(path)
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}:{e.lineno}: invalid JSON: {e.msg}') from e
  if not isinstance(data, dict) or not isinstance(data.get('data'), list):
    raise ValueError(f"{path}: not SQuAD format: expected an object with a 'data' list")
  out = []
  seen = set()
  for a, article in enumerate(data['data']):
    for p, para in enumerate(_get(article, 'paragraphs', list, f'{path}: data[{a}]')):
      where_p = f'{path}: data[{a}].paragraphs[{p}]'
      context = _get(para, 'context', str, where_p)
      sentences, breaks = para.get('sentences'), para.get('sentence_breaks')
      if (sentences is None) != (breaks is None):
        raise ValueError(f'{where_p}: has only one of sentences / sentence_breaks')
      if sentences is not None and len(sentences) != len(breaks):
        raise ValueError(f'{where_p}: {len(sentences)} sentences but {len(breaks)} sentence_breaks')
      for q, qa in enumerate(_get(para, 'qas', list, where_p)):
        where = f'{where_p}.qas[{q}]'
        qid = _get(qa, 'id', str, where)
        if qid in seen:
          raise ValueError(f'{where}: duplicate question id {qid!r}')
        seen.add(qid)
        answers = qa.get('answers') or []
        if not answers:
          if qa.get('is_impossible'):
            if counts:
              counts.add_skip(lang, 'unanswerable')
            continue
          raise ValueError(f'{where}: question {qid!r} has no answers')
        start = answers[0].get('answer_start')
        if not isinstance(start, int) or not 0 <= start < max(len(context), 1):
          raise ValueError(f'{where}: answers[0].answer_start {start!r} outside the context '
                           f'(length {len(context)})')
        if sentences is None:
          positive = context
          if counts:
            counts.add_note(lang, 'positive is the paragraph (no sentence_breaks)')
        else:
          hits = [i for i, (s, e) in enumerate(breaks) if s <= start < e]
          if len(hits) != 1:
            raise ValueError(f'{where}: answer_start {start} of question {qid!r} lies in '
                             f'{len(hits)} sentences (breaks {breaks})')
          positive = sentences[hits[0]]
        record = records_lib.make_record(qid, lang, _get(qa, 'question', str, where), positive,
                                         where=where)
        out.append((record, f'{lang}/{a}'))
        if counts:
          counts.add_read(lang)
  return out


def _get(obj, key, typ, where):
  if not isinstance(obj, dict) or key not in obj:
    raise ValueError(f'{where}: missing field {key!r}')
  if not isinstance(obj[key], typ):
    raise ValueError(f'{where}.{key}: expected {typ.__name__}, got {obj[key]!r:.80}')
  return obj[key]


def article_folds(items: Sequence[tuple[str, str]], num_folds: int, seed: int) -> dict[str, int]:
  """Assigns every group id to a fold so that articles are never split.

  Inputs: (group_id, article_key) pairs from all languages; the number of folds; a seed.
  Articles sharing any group id (across languages) form one component; components are
  shuffled with `seed` and dealt round-robin to folds, so folds are deterministic and
  roughly equal in number of articles.
  """
  if num_folds < 2:
    raise ValueError(f'article_folds: num_folds must be >= 2, got {num_folds}')
  parent: dict[str, str] = {}

  def find(x):
    while parent.setdefault(x, x) != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  for group_id, article in items:
    # Nodes are prefixed so a group id cannot collide with an article key.
    ra, rb = find('g:' + group_id), find('a:' + article)
    if ra != rb:
      parent[max(ra, rb)] = min(ra, rb)
  roots = sorted({find('a:' + a) for _, a in items})
  if len(roots) < num_folds:
    raise ValueError(f'article_folds: {len(roots)} linked article groups, fewer than '
                     f'num_folds={num_folds}')
  order = np.random.default_rng(seed).permutation(len(roots))
  fold_of_root = {roots[i]: k % num_folds for k, i in enumerate(order)}
  return {g: fold_of_root[find('g:' + g)] for g, _ in items}


def load_squad(files: str | os.PathLike | Mapping[str, str | os.PathLike],
               langs: Sequence[str] | None = None, *, split: str = 'all', num_folds: int = 5,
               fold: int = 0, seed: int = 0, name: str | None = None) -> list[Record]:
  """Loads parallel SQuAD-format files as training records, optionally one article split.

  Inputs:
    files: a directory of `<lang>.json` files (the LAReQA layout), or a {lang: path} mapping
      (e.g. translated SQuAD files named any way).
    langs: languages to read (default: all found); an unknown one raises, listing the
      available ones.
    split: 'all'; 'train' (every fold but `fold`); 'heldout' (fold `fold` only).
    num_folds, fold, seed: the article-level folds (see `article_folds`). The folds are
      computed over all available languages, so they do not change when `langs` changes.
    name: source name for the logged counts.
  Recommended for: training on one LAReQA set and evaluating on the other, or in-domain
  checks on held-out articles. Related: `article_folds`, `hybrid_ir.data.lareqa` (the
  evaluation reader of the same files).
  """
  if isinstance(files, Mapping):
    paths = {str(l): pathlib.Path(p) for l, p in files.items()}
    origin = 'files mapping'
  else:
    directory = pathlib.Path(files)
    if not directory.is_dir():
      raise ValueError(f'load_squad: {directory} is not a directory')
    paths = {p.stem: p for p in sorted(directory.glob('*.json'))}
    origin = str(directory)
  if not paths:
    raise ValueError(f'load_squad: no <lang>.json files in {origin}')
  langs = list(langs) if langs is not None else sorted(paths)
  unknown = [l for l in langs if l not in paths]
  if unknown:
    raise ValueError(f'load_squad: languages {unknown} not in {origin}; available: {sorted(paths)}')
  if split not in ('all', 'train', 'heldout'):
    raise ValueError(f"load_squad: split must be 'all', 'train' or 'heldout', got {split!r}")
  if split != 'all' and not 0 <= fold < num_folds:
    raise ValueError(f'load_squad: fold {fold} not in [0, {num_folds})')
  counts = records_lib.Counts(name or origin)
  read_langs = sorted(paths) if split != 'all' else langs
  items = {l: read_squad_file(paths[l], l, counts if l in langs else None) for l in read_langs}
  out = []
  if split == 'all':
    out = [r for l in langs for r, _ in items[l]]
  else:
    folds = article_folds([(r['group_id'], a) for l in read_langs for r, a in items[l]],
                          num_folds, seed)
    keep = (lambda f: f != fold) if split == 'train' else (lambda f: f == fold)
    for l in langs:
      kept = [r for r, _ in items[l] if keep(folds[r['group_id']])]
      counts.add_skip(l, f'other split than {split!r} (fold {fold}/{num_folds})',
                      len(items[l]) - len(kept))
      out.extend(kept)
  counts.log()
  return out
