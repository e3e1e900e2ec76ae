"""JSONL training records -> a training store.

One JSON object per line:
  {"group_id": "q1", "lang": "en", "query": "...", "positive": "...",
   "negatives": ["...", ...], "positive_id": "p17"}
group_id, lang, query, positive: non-empty strings (group_id links the translations of one item
across languages); negatives: optional list of non-empty strings (hard negatives in `lang`);
positive_id: optional id of the positive passage, shared by its translations. Passage identity
(never two in one batch, masked in the loss): positive_id when given, else the positive's
normalised text, plus the positives of one group. A (group_id, lang) may appear on several
lines only with the same query and positive; their negatives are pooled.

Source config: `paths` (a file or list of files, gzipped when named `.gz`); `max_bad_lines` (0):
malformed lines (bad JSON, invalid UTF-8, a bad field) to skip, counted in the store's meta,
before one is an error naming file:line. Blank lines are skipped and counted. `min_lang_share` (0.01): a language in
fewer than this share of the records is taken for a typo ("dee") and is an error naming its
lines; 0 accepts any. For tens of millions of records use the mmarco layout, which prepares with numpy;
this reader holds the records in memory while it prepares.
"""
import collections
import os
from typing import Any

import numpy as np

from hybrid_ir.data import store as store_lib
from hybrid_ir.data import text_files

FIELDS = ('group_id', 'lang', 'query', 'positive', 'negatives', 'positive_id')


def _paths(cfg: Any) -> list[str]:
  paths = cfg.get('paths')
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  if not paths:
    raise ValueError(f'source {cfg.get("name")!r} (jsonl) needs `paths` (a file or a list)')
  return [str(p) for p in paths]


def inputs(cfg: Any) -> list[str]:
  return _paths(cfg)


def settings(cfg: Any) -> dict[str, Any]:
  return {'max_bad_lines': int(cfg.get('max_bad_lines', 0)),
          'min_lang_share': float(cfg.get('min_lang_share', store_lib.MIN_LANG_SHARE))}


def parse_record(obj: Any, where: str) -> dict[str, Any]:
  """Validates one record; raises ValueError naming `where`, the field and the value."""
  if not isinstance(obj, dict):
    raise ValueError(f'{where}: record must be an object, got {type(obj).__name__}')
  unknown = set(obj) - set(FIELDS)
  if unknown:
    raise ValueError(f'{where}: unknown record fields {sorted(unknown)}; known: {list(FIELDS)}')
  for field in ('group_id', 'lang', 'query', 'positive'):
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
      raise ValueError(f'{where}: field {field!r} must be a non-empty string, got {value!r}')
  negatives = obj.get('negatives', [])
  if not isinstance(negatives, list):
    raise ValueError(f'{where}: field negatives must be a list of strings, got {negatives!r}')
  for i, neg in enumerate(negatives):
    if not isinstance(neg, str) or not neg.strip():
      raise ValueError(f'{where}: negatives[{i}] must be a non-empty string, got {neg!r}')
  pid = obj.get('positive_id')
  if pid is not None and (not isinstance(pid, str) or not pid.strip()):
    raise ValueError(f'{where}: field positive_id must be a non-empty string, got {pid!r}')
  return dict(obj, negatives=negatives)


def prepare(cfg: Any, builder: store_lib.Builder, workers: int) -> store_lib.Store:
  del workers
  s = settings(cfg)
  max_bad = s['max_bad_lines']
  counts = collections.Counter()
  bad = []
  items = {}  # (group, lang) -> [query, positive, positive_id, negatives, where]
  lang_lines = collections.defaultdict(list)  # lang -> where its records are
  for where, _, raw in text_files.raw_lines(_paths(cfg)):
    if not raw.strip():
      counts['blank lines (skipped)'] += 1
      continue
    try:
      r = parse_record(text_files.json_line(text_files.decode_line(raw, where), where), where)
    except ValueError:
      bad.append(where)
      if len(bad) > max_bad:
        raise
      continue
    add_record(items, lang_lines, r, where)
    counts['records'] += 1
  if not items:
    raise ValueError(f'source {cfg.get("name")!r}: no records in {_paths(cfg)}')
  counts['bad lines (skipped)'] = len(bad)
  counts['first bad lines'] = bad[:10]
  return write_records(cfg, builder, items, lang_lines, counts)


def add_record(items: dict, lang_lines: dict, r: dict[str, Any], where: str) -> None:
  """Adds a record checked by `parse_record` to `items` ((group, lang) -> [query, positive,
  positive_id, negatives, where]); a repeated (group, lang) pools its negatives and must repeat
  its query and positive (ValueError naming both places otherwise)."""
  key = (r['group_id'], r['lang'])
  lang_lines[r['lang']].append(where)
  if key in items:
    first = items[key]
    if (first[0], first[1]) != (r['query'], r['positive']):
      raise ValueError(f'{where}: group {key[0]!r} lang {key[1]!r} has another query or '
                       f'positive than at {first[4]}; give each (query, positive) pair '
                       'its own group_id')
    first[3].extend(r['negatives'])
  else:
    items[key] = [r['query'], r['positive'], r.get('positive_id'), list(r['negatives']), where]


def write_records(cfg: Any, builder: store_lib.Builder, items: dict, lang_lines: dict,
                  counts: dict) -> store_lib.Store:
  """Writes records gathered by `add_record` into the store (also used by the tfds kind):
  one row per distinct text of a language; identities by positive_id, else normalised text."""
  store_lib.check_language_shares(cfg.get('name'), lang_lines,
                                  float(cfg.get('min_lang_share', store_lib.MIN_LANG_SHARE)))
  group_ids = sorted({g for g, _ in items})
  langs = sorted({l for _, l in items})
  gi = {g: i for i, g in enumerate(group_ids)}
  texts = {l: [] for l in langs}
  rows = {l: {} for l in langs}  # text -> row: one row per distinct text in a language

  def row(lang, text):
    if text not in rows[lang]:
      rows[lang][text] = len(texts[lang])
      texts[lang].append(text)
    return rows[lang][text]

  gq = {l: np.full(len(group_ids), -1, np.int32) for l in langs}
  gp = {l: np.full(len(group_ids), -1, np.int32) for l in langs}
  negs = {l: [[] for _ in group_ids] for l in langs}
  by_pid = collections.defaultdict(list)
  for (g, l), (query, positive, pid, negatives, _) in sorted(items.items()):
    i = gi[g]
    gq[l][i] = row(l, query)
    gp[l][i] = row(l, positive)
    negs[l][i] = [row(l, n) for n in dict.fromkeys(negatives)]
    if pid is not None:
      by_pid[pid].append((l, int(gp[l][i])))
  edges = [(nodes[0], n) for nodes in by_pid.values() for n in nodes[1:]]
  return store_lib.write_tables(
      builder, langs=langs, group_ids=group_ids, texts=texts, group_query=gq,
      group_positive=gp, negatives=negs, same_text=True, extra_edges=edges,
      counts=dict(counts))
