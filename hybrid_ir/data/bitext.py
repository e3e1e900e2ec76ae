"""Parallel text -> a training store for translation ranking (LaBSE's task): a sentence in one
language is the query and its translation in another language is the positive.

Two kinds:
  bitext   `paths`: gzip or plain TSV files with the header `id<TAB>lang<TAB>text`, unquoted;
           rows with the same id are translations (../shared/data/bitext: LibreOffice help,
           Bible verses). Optional `max_bad_lines` (0: malformed lines, invalid UTF-8
           included, to skip before one is an error naming file:line) and `min_lang_share`
           (0.01: a language in fewer than this share of the rows is an error naming its
           lines, a typo such as "dee"; 0 accepts any).
  tatoeba  `path`: a folder of Tatoeba test files `tatoeba.<xxx>-eng.<xxx>` and
           `tatoeba.<xxx>-eng.eng` (line i of one is the translation of line i of the other);
           `langs`: the <xxx> codes to read (ISO 639-3, e.g. ['deu', 'spa']). Languages are
           renamed to the ISO 639-1 codes the evaluation uses where one exists (deu -> de,
           cmn -> zh, eng -> en; see ISO3_TO_1); others keep their 3-letter code.

Groups are the ids (tatoeba: '<xxx>-eng:<line>'); a group's query and positive in a language
are the same text, so these sources make cross-lingual pairs only (no X-X-mono batches).
Passage identity: the id, plus equal normalised texts within a language (the Bible repeats
verses such as "Yahweh spoke to Moses, saying," 72 times under different ids).
"""
import collections
import pathlib
from typing import Any

import numpy as np

from hybrid_ir.data import store as store_lib
from hybrid_ir.data import text_files

ISO3_TO_1 = {'ara': 'ar', 'cmn': 'zh', 'deu': 'de', 'ell': 'el', 'eng': 'en', 'spa': 'es',
             'fra': 'fr', 'hin': 'hi', 'ita': 'it', 'jpn': 'ja', 'kor': 'ko', 'nld': 'nl',
             'pol': 'pl', 'por': 'pt', 'rus': 'ru', 'tha': 'th', 'tur': 'tr', 'ukr': 'uk',
             'vie': 'vi'}
HEADER = ['id', 'lang', 'text']


def _tatoeba_files(cfg: Any) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
  folder = pathlib.Path(cfg.get('path') or '')
  langs = list(cfg.get('langs') or [])
  if not folder.is_dir() or not langs:
    raise ValueError(f'source {cfg.get("name")!r} (tatoeba) needs `path` (the folder of '
                     f'tatoeba.<xxx>-eng.* files) and `langs` (<xxx> codes); got path='
                     f'{cfg.get("path")!r}, langs={langs!r}')
  out = []
  for x in langs:
    a, b = folder / f'tatoeba.{x}-eng.{x}', folder / f'tatoeba.{x}-eng.eng'
    if not a.is_file() or not b.is_file():
      have = sorted({p.name.split('.')[1].split('-')[0] for p in folder.glob('tatoeba.*-eng.*')})
      raise ValueError(f'source {cfg.get("name")!r}: no {a.name} / {b.name} in {folder}; '
                       f'languages there: {have}')
    out.append((x, a, b))
  return out


def inputs(cfg: Any) -> list[str]:
  if cfg.get('kind') == 'tatoeba':
    return [str(p) for _, a, b in _tatoeba_files(cfg) for p in (a, b)]
  paths = cfg.get('paths')
  paths = [paths] if isinstance(paths, str) else list(paths or [])
  if not paths:
    raise ValueError(f'source {cfg.get("name")!r} (bitext) needs `paths` (TSV files)')
  return [str(p) for p in paths]


def settings(cfg: Any) -> dict[str, Any]:
  if cfg.get('kind') == 'tatoeba':
    return {'langs': sorted(cfg.get('langs'))}
  return {'max_bad_lines': int(cfg.get('max_bad_lines', 0)),
          'min_lang_share': float(cfg.get('min_lang_share', store_lib.MIN_LANG_SHARE))}


def _rows_bitext(cfg: Any, counts: collections.Counter):
  """Yields (id, lang, text) from the TSV files, checking every line."""
  max_bad, bad = int(cfg.get('max_bad_lines', 0)), 0
  for where, lineno, raw in text_files.raw_lines(inputs(cfg)):
    try:
      fields = _fields(raw, where, header=lineno == 1)
    except _BadLine:
      bad += 1
      counts['bad lines (skipped)'] += 1
      if bad > max_bad:
        raise
      continue
    if lineno > 1:
      yield (*fields, where)


class _BadLine(ValueError):
  """A malformed data line: skipped while there are at most `max_bad_lines`."""


def _fields(raw: bytes, where: str, header: bool) -> list[str]:
  """The id, lang and text of one TSV line (or checks the header line)."""
  try:
    line = text_files.decode_line(raw, where)
  except ValueError as e:
    raise _BadLine(str(e)) from None
  fields = line.rstrip('\n').split('\t')
  if header:
    if fields != HEADER:
      raise ValueError(f'{where}: expected the header id<TAB>lang<TAB>text, got '
                       f'{line.rstrip()[:80]!r}')
  elif len(fields) != 3 or not all(x.strip() for x in fields):
    raise _BadLine(f'{where}: expected three non-empty tab-separated fields (id, lang, text), '
                   f'got {line.rstrip()[:80]!r}')
  return fields


def _rows_tatoeba(cfg: Any, counts: collections.Counter):
  for x, a, b in _tatoeba_files(cfg):
    lines = [p.read_text(encoding='utf-8').rstrip('\n').split('\n') for p in (a, b)]
    if len(lines[0]) != len(lines[1]):
      raise ValueError(f'{a} has {len(lines[0])} lines but {b} has {len(lines[1])}')
    lang = ISO3_TO_1.get(x, x)
    for i, (t, e) in enumerate(zip(*lines)):
      for path, text, l in ((a, t, lang), (b, e, 'en')):
        if not text.strip():
          raise ValueError(f'{path}:{i + 1}: empty line')
        yield f'{x}-eng:{i}', l, text, f'{path}:{i + 1}'
    counts[f'{x}-eng pairs'] = len(lines[0])


def prepare(cfg: Any, builder: store_lib.Builder, workers: int) -> store_lib.Store:
  del workers
  counts = collections.Counter()
  reader = _rows_tatoeba if cfg.get('kind') == 'tatoeba' else _rows_bitext
  texts = collections.defaultdict(list)
  where = {}
  entries = []
  for gid, lang, text, loc in reader(cfg, counts):
    if (gid, lang) in where:
      raise ValueError(f'{loc}: id {gid!r} has a second {lang!r} text (first at '
                       f'{where[(gid, lang)]})')
    where[(gid, lang)] = loc
    entries.append((gid, lang, len(texts[lang])))
    texts[lang].append(text)
  if not entries:
    raise ValueError(f'source {cfg.get("name")!r}: no texts in {inputs(cfg)}')
  if cfg.get('kind') != 'tatoeba':  # tatoeba's languages come from the config
    lang_lines = collections.defaultdict(list)
    for (_, lang), loc in where.items():
      lang_lines[lang].append(loc)
    store_lib.check_language_shares(cfg.get('name'), lang_lines,
                                    settings(cfg)['min_lang_share'])
  group_ids = sorted({g for g, _, _ in entries})
  langs = sorted(texts)
  gi = {g: i for i, g in enumerate(group_ids)}
  rows = {l: np.full(len(group_ids), -1, np.int32) for l in langs}
  for gid, lang, r in entries:
    rows[lang][gi[gid]] = r
  for l in langs:
    counts[f'texts {l}'] = len(texts[l])
  return store_lib.write_tables(
      builder, langs=langs, group_ids=group_ids, texts=texts, group_query=rows,
      group_positive=rows, negatives={l: [[] for _ in group_ids] for l in langs},
      same_text=True, mono=False, counts=dict(counts))
