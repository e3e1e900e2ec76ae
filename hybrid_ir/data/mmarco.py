"""mMARCO in the layout it is distributed in -> a training store (one aligned index, no join).

Source config:
  collections  {lang: path}  passage collection per language, lines `pid<TAB>text`
  queries      {lang: path}  training queries per language, lines `qid<TAB>text`
  triples      path          one language-independent id triples file, lines
                             `qid<TAB>positive pid<TAB>negative pid` (39.8M lines in mMARCO)
  max_bad_lines  (0)         malformed lines to skip (counted, reported in the store's meta)
                             before one is an error; a skipped line's id that the triples need
                             is still an error ("missing"), never a silent drop.
Files may be gzip-compressed (`.gz`). Ids are integers; fields hold no tabs or newlines.

What the store holds (`hybrid_ir.data.store`): one text file per language with the referenced
queries (rows [0, Q), sorted by qid) then the referenced passages (rows [Q, Q+P), sorted by
pid), so row r is the same id in every language and the index exists once ('all'). A group is
one (qid, positive pid) pair; its hard negatives are the negative pids of its triples (deduplicated),
as passage rows, so each passage text is stored once per language, however many triples name it.
Passage identity: the pid; positives of one query (several groups) share one.

Preparation is parallel: the triples file is parsed in chunks by a process pool with numpy
(`np.fromstring`, vectorised validation), and each language's texts are written by a process of
their own. Memory at preparation is ~50 bytes per triple; at training, ~4 bytes per triple
(the negative rows, memory-mapped).
"""
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from hybrid_ir.data import store as store_lib
from hybrid_ir.data import text_files

CHUNK_BYTES = 64 << 20
_ALLOWED = np.zeros(256, bool)
_ALLOWED[list(b'0123456789\t\n\r')] = True


def inputs(cfg: Any) -> list[str]:
  _check(cfg)
  langs = sorted(dict(cfg.get('collections')))
  return ([str(dict(cfg.get('collections'))[l]) for l in langs] +
          [str(dict(cfg.get('queries'))[l]) for l in langs] + [str(cfg.get('triples'))])


def settings(cfg: Any) -> dict[str, Any]:
  _check(cfg)
  return {'langs': sorted(dict(cfg.get('collections'))),
          'max_bad_lines': int(cfg.get('max_bad_lines', 0))}


def _check(cfg: Any) -> None:
  name = cfg.get('name')
  coll, queries, triples = cfg.get('collections'), cfg.get('queries'), cfg.get('triples')
  if not coll or not queries or not triples:
    raise ValueError(f'source {name!r} (mmarco) needs collections {{lang: path}}, queries '
                     f'{{lang: path}} and triples (path); got collections={coll!r}, '
                     f'queries={queries!r}, triples={triples!r}')
  if set(dict(coll)) != set(dict(queries)):
    raise ValueError(f'source {name!r} (mmarco): collections have languages '
                     f'{sorted(dict(coll))} but queries have {sorted(dict(queries))}')


# --------------------------------------------------------------------------------------------
# The id triples: numpy over byte chunks, in a process pool.
# --------------------------------------------------------------------------------------------

def _chunks(path: str) -> Iterator[bytes]:
  """The file in ~CHUNK_BYTES pieces that end at a line end (a final newline is added)."""
  with text_files.open_bytes(path) as f:
    rest = b''
    while True:
      block = f.read(CHUNK_BYTES)
      if not block:
        break
      block = rest + block
      cut = block.rfind(b'\n') + 1
      rest = block[cut:]
      if cut:
        yield block[:cut]
      else:
        rest = block
    if rest:
      yield rest + b'\n'


def parse_triples_chunk(data: bytes) -> tuple[np.ndarray, np.ndarray, int]:
  """One chunk of whole lines -> (ids int64 [n_good, 3], bad line indices in the chunk, lines).

  A line is good when it is three non-empty integer fields separated by tabs (a trailing \\r
  is allowed).
  """
  arr = np.frombuffer(data, np.uint8)
  ends = np.flatnonzero(arr == 10)
  n = len(ends)
  starts = np.concatenate([[0], ends[:-1] + 1])
  bad = np.zeros(n, bool)
  # Bytes other than digits, tab, CR, LF.
  wrong = np.flatnonzero(~_ALLOWED[arr])
  bad[np.searchsorted(ends, wrong)] = True
  tabs = np.flatnonzero(arr == 9)
  line_of_tab = np.searchsorted(ends, tabs)
  bad |= np.bincount(line_of_tab, minlength=n) != 2
  # Empty fields: a tab at a line start, or followed by a tab, CR or LF.
  nxt = arr[np.minimum(tabs + 1, len(arr) - 1)]
  empty = (tabs == starts[line_of_tab]) | (nxt == 9) | (nxt == 10) | (nxt == 13)
  bad[line_of_tab[empty]] = True
  bad |= ends == starts  # blank line
  if bad.any():
    keep = np.repeat(~bad, ends - starts + 1)
    data = arr[keep].tobytes()
  ids = np.fromstring(data.decode('ascii', 'replace'), dtype=np.int64, sep=' ')
  if ids.size != 3 * int((~bad).sum()):  # cannot happen after the checks above; be loud anyway
    raise ValueError(f'triples chunk: parsed {ids.size} ids for {(~bad).sum()} lines')
  return ids.reshape(-1, 3), np.flatnonzero(bad), n


def _imap(fn, items, workers: int):
  """map() over a 'spawn' process pool (never fork: the caller may hold JAX or TF threads), or
  in this process for one worker."""
  if workers <= 1:
    yield from map(fn, items)
    return
  with multiprocessing.get_context('spawn').Pool(workers) as pool:
    yield from pool.imap(fn, items)


def read_triples(path: str, workers: int, max_bad_lines: int = 0) -> tuple[np.ndarray, dict]:
  """The id triples file -> int64 [T, 3] (qid, positive pid, negative pid), and counts."""
  parts, bad_lines, lines = [], [], 0
  for ids, bad, n in _imap(parse_triples_chunk, _chunks(path), workers):
    parts.append(ids)
    bad_lines.extend((lines + bad + 1).tolist())
    lines += n
    if len(bad_lines) > max_bad_lines:
      break
  if len(bad_lines) > max_bad_lines:
    with text_files.open_text(path) as f:
      for lineno, line in enumerate(f, 1):
        if lineno == bad_lines[0]:
          raise ValueError(f'{path}:{lineno}: expected qid<TAB>positive pid<TAB>negative pid '
                           f'(three integers), got {line.rstrip()[:80]!r}' +
                           (f' ({len(bad_lines)} bad lines so far; max_bad_lines is '
                            f'{max_bad_lines})' if max_bad_lines else ''))
  triples = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
  if not len(triples):
    raise ValueError(f'{path}: no triples')
  return triples, {'triples': len(triples), 'bad triples lines (skipped)': len(bad_lines),
                   'first bad lines': bad_lines[:10]}


# --------------------------------------------------------------------------------------------
# Texts: one process per language.
# --------------------------------------------------------------------------------------------

def _read_texts(path: str, ids: np.ndarray, records: np.ndarray, offset: int, writer,
                next_record: int, max_bad: int, bad: list) -> int:
  """Writes the lines of `path` whose id is in the sorted `ids`; fills records[offset + i]."""
  block_ids, block_texts, block_lines = [], [], []

  def flush():
    nonlocal next_record
    if not block_ids:
      return
    a = np.asarray(block_ids, np.int64)
    pos = np.searchsorted(ids, a)
    hit = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == a)
    for i in np.flatnonzero(hit):
      row = offset + pos[i]
      if records[row] >= 0:
        raise ValueError(f'{path}:{block_lines[i]}: id {block_ids[i]} occurs twice')
      records[row] = next_record
      writer.write(block_texts[i].encode('utf-8'))
      next_record += 1
    block_ids.clear()
    block_texts.clear()
    block_lines.clear()

  with text_files.open_text(path) as f:
    for lineno, line in enumerate(f, 1):
      line = line.rstrip('\r\n')
      id_str, sep, text = line.partition('\t')
      ok = bool(sep) and id_str.isdigit() and bool(text.strip()) and '\t' not in text
      if not ok:
        bad.append(f'{path}:{lineno}')
        if len(bad) > max_bad:
          raise ValueError(f'{path}:{lineno}: expected id<TAB>text (integer id, non-empty text '
                           f'without tabs), got {line[:80]!r}')
        continue
      block_ids.append(int(id_str))
      block_texts.append(text)
      block_lines.append(lineno)
      if len(block_ids) >= 100_000:
        flush()
  flush()
  return next_record


def write_language(args) -> dict[str, Any]:
  """Worker: one language's referenced queries and passages -> its ArrayRecord + row map."""
  lang, queries_path, collection_path, ids_dir, text_path, records_path, max_bad = args
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  qids = np.load(os.path.join(ids_dir, 'qids.npy'), mmap_mode='r')
  pids = np.load(os.path.join(ids_dir, 'pids.npy'), mmap_mode='r')
  records = np.full(len(qids) + len(pids), -1, np.int64)
  writer = array_record_module.ArrayRecordWriter(str(text_path), store_lib.TEXT_WRITER_OPTIONS)
  bad = []
  n = _read_texts(queries_path, qids, records, 0, writer, 0, max_bad, bad)
  _read_texts(collection_path, pids, records, len(qids), writer, n, max_bad, bad)
  writer.close()
  missing = np.flatnonzero(records < 0)
  if len(missing):
    m_q, m_p = missing[missing < len(qids)], missing[missing >= len(qids)] - len(qids)
    raise ValueError(f'mmarco {lang}: {len(m_q)} query ids and {len(m_p)} passage ids named by '
                     f'the triples are missing: qids {qids[m_q[:5]].tolist()} not in '
                     f'{queries_path}; pids {pids[m_p[:5]].tolist()} not in {collection_path}')
  if not np.array_equal(records, np.arange(len(records))):
    np.save(str(records_path), records.astype(np.int32))
  return {'lang': lang, 'bad lines (skipped)': len(bad), 'first bad lines': bad[:5]}


def prepare(cfg: Any, builder: store_lib.Builder, workers: int) -> store_lib.Store:
  """Parses the triples, then writes every language's texts in parallel, then the index."""
  s = settings(cfg)
  langs = s['langs']
  triples, counts = read_triples(str(cfg.get('triples')), workers, s['max_bad_lines'])
  q, pos, neg = triples[:, 0], triples[:, 1], triples[:, 2]
  qids = np.unique(q)
  pids = np.unique(np.concatenate([pos, neg]))
  n_q, n_p = len(qids), len(pids)
  qi, pi, ni = (np.searchsorted(qids, q), np.searchsorted(pids, pos), np.searchsorted(pids, neg))
  del triples, q, pos, neg
  # Groups: distinct (query, positive), sorted by qid then pid.
  keys, group_of = np.unique(qi * n_p + pi, return_inverse=True)
  g_query, g_pos = keys // n_p, keys % n_p
  # Negatives per group, deduplicated, as passage rows.
  neg_keys = np.unique(group_of.astype(np.int64) * n_p + ni)
  neg_group, neg_p = neg_keys // n_p, neg_keys % n_p
  offsets = np.zeros(len(keys) + 1, np.int64)
  offsets[1:] = np.cumsum(np.bincount(neg_group, minlength=len(keys)))
  counts.update(queries=n_q, passages=n_p, groups=len(keys), negatives=len(neg_keys),
                **{'negative equals the positive (masked in the loss)':
                   int((neg_p == g_pos[neg_group]).sum())})
  del qi, pi, ni, group_of, neg_keys

  ids_dir = str(builder.tmp / 'ids')
  os.makedirs(ids_dir, exist_ok=True)
  np.save(os.path.join(ids_dir, 'qids.npy'), qids)
  np.save(os.path.join(ids_dir, 'pids.npy'), pids)
  jobs = [(l, str(dict(cfg.get('queries'))[l]), str(dict(cfg.get('collections'))[l]), ids_dir,
           str(builder.text_path(l)), str(builder.tmp / 'texts' / f'{l}.records.npy'),
           s['max_bad_lines']) for l in langs]
  per_lang = list(_imap(write_language, jobs, min(workers, len(jobs))))
  counts['per language'] = {r.pop('lang'): r for r in per_lang}

  # Identity: the pid; the positives of one query are one passage.
  rows = n_q + n_p
  a, b = store_lib.chain_edges(g_query, n_q + g_pos)
  comp = store_lib.components(rows, a, b)
  _, ident = np.unique(comp, return_inverse=True)
  ident = ident.astype(np.int32)
  builder.save_index(store_lib.ALL, store_lib.LangIndex(
      group_query=g_query.astype(np.int32), group_positive=(n_q + g_pos).astype(np.int32),
      negative_offsets=offsets, negative_rows=(n_q + neg_p).astype(np.int32),
      row_identity=ident))
  group_ids = (f'{a}:{b}' for a, b in zip(qids[g_query].tolist(), pids[g_pos].tolist()))
  for f in ('qids.npy', 'pids.npy'):
    os.remove(os.path.join(ids_dir, f))
  os.rmdir(ids_dir)
  return builder.finish(langs=langs, aligned=True, group_ids=list(group_ids),
                        group_identity=ident[n_q + g_pos], counts=counts)
