"""The prepared training store: one source on disk as texts plus compact integer indexes.

Why it exists: at the paper's scale (mMARCO: 39.8M id triples, 8.8M passages in each of 7
languages) no host may hold a Python object per record, parse the raw files at every start, or
need a copy of the corpus on its boot disk. A source is therefore prepared once
(`python -m hybrid_ir.prepare`, or on first use for small sources) into this store, and training
hosts read it by random access, locally or from gs://: in memory they hold integer arrays only
(memory-mapped where the file is local), and fetch the texts of their slice of each batch.

Layout of a store directory:
  meta.json                       written last; a directory without it is incomplete and is
                                  never read (preparation killed half way leaves no store). It
                                  records the size and sha256 of every other file ("files") and
                                  a digest of itself ("meta_sha256").
  texts/<lang>.array_record       every text of that language (queries and passages), one
                                  record each; a text *row* is its index there, unless
  texts/<lang>.records.npy        int32 [R] maps rows to records (rows sorted by id while the
                                  file was written in its own order; absent = identity).
  index/<L>.group_query.npy       int32 [G] text row of each group's query in language L; -1 =
                                  the group has no query in L.
  index/<L>.group_positive.npy    int32 [G] text row of each group's positive; -1 = none in L.
  index/<L>.negative_offsets.npy  int64 [G+1] and index/<L>.negative_rows.npy int32 [N]: the
                                  hard negatives of group g in L are rows[offsets[g]:offsets[g+1]].
  index/<L>.row_identity.npy      int32 [R] passage identity of each text row.
  index/group_identity.npy        int32 [G] passage identity of each group's positive.
  groups.array_record             the group id strings, in group order (for people and tests).
L is a language, or 'all' for a source whose rows are aligned across languages (mMARCO: row r
is the same query or passage id in every language), so its index exists once.

Ownership and integrity: a store is written into a temporary sibling `<dir>.tmp-<random>` (with
a writer.json naming host and pid) and renamed into place; an existing path is replaced only
when it is a store (its meta.json says format hybrid_ir.store) or holds no files at all, so
nothing a user put there is ever deleted. Opening a store checks meta.json's own digest, every
.npy file's sha256 and every file's size (and the sha256 of texts small enough to be read whole);
`Store.verify()` checks every sha256 (`python -m hybrid_ir.prepare --config C --verify`). Any
mismatch, or a reading error of a text file, is a `StoreError` naming the store and the file.

Groups are the translations of one item (SQuAD question id, mMARCO (query id, positive id),
bitext id): a cross-lingual example is a group's query in one language with its positive in
another. A *passage identity* names what a passage means across languages: two passages share
one when they are positives of one group, positives of groups that share a query, or (for
sources that ask for it) the same text after normalisation in one language. The sampler never
puts two examples of one identity into a batch, and the loss masks them anyway.

Why ArrayRecord written directly and not a TFDS builder: TFDS's `data_source` reads the same
ArrayRecord files, but a builder stores per-example feature dicts, while this store's unit is a
text shared by many examples (a passage is stored once per language, not once per triple) plus
integer indexes that do not fit TFDS's features model; ArrayRecord gives random access, zstd
compression and gs:// reads (through riegeli) with nothing else in between.
"""
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from etils import epath
import numpy as np

from hybrid_ir import hardware

VERSION = 2  # 2: meta.json records every file's size and sha256, and its own digest
FORMAT = 'hybrid_ir.store'
WRITER = 'writer.json'  # in a store being written: who writes it (host, pid, start time)
PREPARE_AGAIN = 'prepare it again: python -m hybrid_ir.prepare --config <config> --overwrite'
ALL = 'all'  # the index language of an aligned store
# Texts of a language whose file is below this size are read into memory once: small sources
# (LAReQA, the demo) then cost no I/O per batch.
CACHE_TEXTS_BELOW_BYTES = 16 << 20
_INDEX_FIELDS = ('group_query', 'group_positive', 'negative_offsets', 'negative_rows',
                 'row_identity')


def _is_remote(path: epath.Path) -> bool:
  return '://' in str(path)


class StoreError(ValueError):
  """A store that cannot be used or made as asked: damaged, something else stands at its path,
  or prepared from other data. The message is one line that names the store, the file and what
  to do; binaries print it without a traceback."""


def file_digest(path: str | os.PathLike) -> str:
  """sha256 of a file's bytes, read in 8 MiB chunks (local or gs://)."""
  h = hashlib.sha256()
  with epath.Path(path).open('rb') as f:
    while chunk := f.read(8 << 20):
      h.update(chunk)
  return h.hexdigest()


def _stamp(path: epath.Path) -> tuple[str, list[int]]:
  """(key, stamp) of a file for the digest cache: its real path, and what changes whenever its
  bytes may have (size, mtime and ctime in ns, inode; a user cannot set a ctime back)."""
  if _is_remote(path):
    st = path.stat()
    return str(path), [int(st.length), int(st.mtime)]
  st = os.stat(path)
  return os.path.realpath(path), [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _read_json(path: epath.Path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def _write_json_atomic(path: epath.Path, obj: Any) -> None:
  if _is_remote(path):
    path.write_text(json.dumps(obj))
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = f'{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}'
  with open(tmp, 'w') as f:
    json.dump(obj, f)
  os.replace(tmp, path)


def file_fingerprints(paths: Iterable[str | os.PathLike],
                      cache_file: str | os.PathLike | None = None) -> list[dict[str, Any]]:
  """Path, size and sha256 of each input file: what a store is keyed by (their contents).

  Inputs: the files; `cache_file`, a JSON file that remembers each file's sha256 by (real path,
  size, mtime, ctime, inode), so that a start reads only the files that changed (None: hash
  every file). Losing or sharing the cache is harmless: a missing entry is computed again.
  Raises FileNotFoundError naming a missing file.
  """
  cache_path = epath.Path(cache_file) if cache_file else None
  cache = (_read_json(cache_path) if cache_path else None) or {}
  out, changed = [], False
  for p in paths:
    path = epath.Path(p)
    if not path.is_file():
      raise FileNotFoundError(f'training source file not found: {path}')
    key, stamp = _stamp(path)
    hit = cache.get(key)
    if isinstance(hit, list) and hit[:-1] == stamp:
      sha = hit[-1]
    else:
      sha = file_digest(path)
      cache[key] = stamp + [sha]
      changed = True
    out.append({'path': str(path), 'size': int(stamp[0]), 'sha256': sha})
  if changed and cache_path:
    # Entries of local files that are gone would only make the cache grow.
    cache = {k: v for k, v in cache.items() if '://' in k or os.path.exists(k)}
    try:
      _write_json_atomic(cache_path, cache)
    except OSError as e:  # a read-only store folder: the files are hashed again next time
      logging.warning('input digests not cached in %s: %s', cache_path, e)
  return out


def content_fingerprint(kind: str, settings: Mapping[str, Any],
                        inputs: Sequence[Mapping[str, Any]]) -> str:
  """The data's identity: kind, parse settings, the input files' sizes and sha256s, and the store
  version; not where the files lie or when they were copied. It names the default store folder
  (`<store_dir>/<name>-<fingerprint>`), and a resumed run's input state is checked against it."""
  content = {'kind': kind, 'settings': dict(settings),
             'inputs': [(i.get('size'), i.get('sha256')) for i in inputs], 'version': VERSION}
  return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# What stands at a store's path: a store, a half-written one, or something of the user's.
# --------------------------------------------------------------------------------------------

def is_store(directory: str | os.PathLike) -> bool:
  """True when `directory` holds a meta.json of format hybrid_ir.store (any version)."""
  meta = _read_json(epath.Path(directory) / 'meta.json')
  return isinstance(meta, dict) and meta.get('format') == FORMAT


def is_complete(directory: str | os.PathLike) -> bool:
  return (epath.Path(directory) / 'meta.json').exists()


def _made_here(path: epath.Path) -> bool:
  """A store, or one whose meta.json is damaged: this layout is this code's alone."""
  return is_store(path) or ((path / 'meta.json').exists() and
                            (path / 'groups.array_record').exists() and
                            (path / 'index' / 'group_identity.npy').exists())


def _holds_no_files(path: epath.Path) -> bool:
  """True for a folder tree with no file in it (an empty folder, or empty texts/ and index/):
  removing it loses nothing."""
  if _is_remote(path):
    return path.is_dir() and not any(p.is_file() for p in path.rglob('*'))
  if os.path.islink(path) or not os.path.isdir(path):
    return False
  for root, dirs, files in os.walk(path):
    if files or any(os.path.islink(os.path.join(root, d)) for d in dirs):
      return False
  return True


def _remove_empty_tree(path: epath.Path) -> None:
  # Local only (on gs:// a store is written in place). rmdir, not rmtree: it fails rather than
  # delete a file that appeared meanwhile.
  for root, _, _ in sorted(os.walk(path), key=lambda t: -len(t[0])):
    os.rmdir(root)


def check_replaceable(directory: str | os.PathLike) -> None:
  """Raises StoreError naming `directory` unless preparing a store there may replace what is
  there: nothing, a store, a store half-written by this code (writer.json; gs:// writes in
  place), or folders without files."""
  path = epath.Path(directory)
  if not (os.path.lexists(path) if not _is_remote(path) else path.exists()):
    return
  if _made_here(path) or _holds_no_files(path) or (
      _is_remote(path) and (path / WRITER).exists() and not (path / 'meta.json').exists()):
    return
  what = 'a file' if path.is_file() else 'a folder that is not a hybrid_ir store'
  raise StoreError(f'{path} is {what} (no meta.json of format {FORMAT}); nothing there was '
                   'changed. Move it away, or give the source another name, `store` or '
                   'input.store_dir')


def remove_stale_temporaries(parent: str | os.PathLike) -> None:
  """Removes the half-written stores (`*.tmp-*`) in `parent` whose writer, a process of this
  host, is gone, and the replaced stores (`*.old-*`) an interrupted overwrite left; logs each,
  and names (keeps) the half-written ones another host or a live process may still write.
  Local folders only: on gs:// a store is written in place."""
  parent = epath.Path(parent)
  if _is_remote(parent) or not parent.is_dir():
    return
  host = socket.gethostname()
  for p in sorted(parent.glob('*.tmp-*')):
    if not p.is_dir() or os.path.islink(p):
      continue
    writer = _read_json(p / WRITER)
    if not (isinstance(writer, dict) and writer.get('format') == f'{FORMAT}.writer'):
      logging.warning('%s looks like a half-written store of an older version (no %s): remove '
                      'it if no preparation is running', p, WRITER)
    elif writer.get('host') == host and not hardware.process_alive(int(writer.get('pid', 0))):
      shutil.rmtree(str(p), ignore_errors=True)
      logging.warning('removed %s: a half-written store whose writer (pid %s on this host, '
                      'started %s) is gone', p, writer.get('pid'),
                      time.strftime('%Y-%m-%d %H:%M', time.localtime(writer.get('started', 0))))
    else:
      logging.warning('%s: a store being written by pid %s on %s since %s; remove it if that '
                      'process is gone', p, writer.get('pid'), writer.get('host'),
                      time.strftime('%Y-%m-%d %H:%M', time.localtime(writer.get('started', 0))))
  for p in sorted(parent.glob('*.old-*')):
    if p.is_dir() and not os.path.islink(p) and _made_here(p):
      shutil.rmtree(str(p), ignore_errors=True)
      logging.warning('removed %s: a store replaced by an interrupted overwrite', p)


# A language code in fewer than this share of a source's records is taken for a typo.
MIN_LANG_SHARE = 0.01


def check_language_shares(name: str, lines: Mapping[str, Sequence[str]], min_share: float
                          ) -> None:
  """Raises ValueError naming the lines of each language seen in fewer than `min_share` of a
  source's records (a typo such as "dee" would otherwise become a language of its own, and
  its groups would lose their pairs in the language meant).

  Inputs: the source's name; lang -> the file:line of each of its records; the share (the
  source setting `min_lang_share`; 0 accepts any language).
  """
  total = sum(len(v) for v in lines.values())
  rare = {l: v for l, v in lines.items() if len(v) < min_share * total}
  if rare:
    said = '; '.join(f'{l!r} in {len(v)} record(s): {", ".join(v[:5])}'
                     + (f' and {len(v) - 5} more' if len(v) > 5 else '')
                     for l, v in sorted(rare.items()))
    raise ValueError(f'source {name!r}: languages in fewer than {min_share:.1%} of its {total} '
                     f'records (a typo?): {said}. Fix the lang there, or set the source\'s '
                     'min_lang_share=0 to keep them')


def normalize_text(text: str) -> str:
  """The form in which two texts count as the same passage: NFKC, case-folded, spaces collapsed."""
  return ' '.join(unicodedata.normalize('NFKC', text).casefold().split())


# --------------------------------------------------------------------------------------------
# Passage identities: connected components over passage rows.
# --------------------------------------------------------------------------------------------

def components(num_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Connected components of the undirected graph with edges (a[i], b[i]) over [0, num_nodes).

  Returns int64 [num_nodes]: each node's component, named by its smallest node. Vectorised
  hooking + pointer jumping, so millions of edges take seconds without a Python loop per edge.
  """
  parent = np.arange(num_nodes, dtype=np.int64)
  a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
  while True:
    pa, pb = parent[a], parent[b]
    differ = pa != pb
    if not differ.any():
      return parent
    lo, hi = np.minimum(pa[differ], pb[differ]), np.maximum(pa[differ], pb[differ])
    np.minimum.at(parent, hi, lo)  # hook each root under the smaller root
    while True:
      grand = parent[parent]
      if np.array_equal(grand, parent):
        break
      parent = grand


def chain_edges(keys: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Edges linking all nodes that share a key (each to the next of its key): O(n log n)."""
  keys, nodes = np.asarray(keys), np.asarray(nodes, np.int64)
  order = np.argsort(keys, kind='stable')
  k, n = keys[order], nodes[order]
  same = k[1:] == k[:-1]
  return n[:-1][same], n[1:][same]


def text_keys(texts: Sequence[str]) -> np.ndarray:
  """64-bit keys of normalised texts (equal key = same passage; collisions ~n^2/2^64)."""
  return np.array([int.from_bytes(hashlib.blake2b(normalize_text(t).encode('utf-8'),
                                                  digest_size=8).digest(), 'little', signed=True)
                   for t in texts], np.int64)


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------

# 64 records per compressed chunk. With one per chunk (TFDS's random-access setting) a read
# costs time proportional to the file's number of chunks in array_record 0.8.6: measured here,
# batched random reads fall from 98k records/s at 200k records to 2.8k/s at 2.4M; at 64 per
# chunk they run at 114k/s at 2.4M (a read decompresses ~25 KB of real text).
TEXT_WRITER_OPTIONS = 'group_size:64'


def write_texts(path: str | os.PathLike, texts: Iterable[str]) -> int:
  """Writes texts as one ArrayRecord record each (random-access layout); returns the count."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  writer = array_record_module.ArrayRecordWriter(str(path), TEXT_WRITER_OPTIONS)
  n = 0
  for t in texts:
    writer.write(t.encode('utf-8'))
    n += 1
  writer.close()
  return n


def save_array(path: epath.Path, array: np.ndarray) -> None:
  if _is_remote(path):
    buf = io.BytesIO()
    np.save(buf, array)
    path.write_bytes(buf.getvalue())
  else:
    np.save(str(path), array)


@dataclasses.dataclass
class LangIndex:
  """The index arrays of one language (or of 'all' in an aligned store)."""
  group_query: np.ndarray
  group_positive: np.ndarray
  negative_offsets: np.ndarray
  negative_rows: np.ndarray
  row_identity: np.ndarray


def csr(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """Per-group lists of rows -> (offsets int64 [G+1], rows int32 [N])."""
  offsets = np.zeros(len(lists) + 1, np.int64)
  offsets[1:] = np.cumsum([len(x) for x in lists])
  rows = np.fromiter((r for x in lists for r in x), np.int32, count=int(offsets[-1]))
  return offsets, rows


class Builder:
  """Writes one store into a temporary directory; `finish` makes it visible in one step.

  Locally the temporary directory `<directory>.tmp-<random>` is renamed into place (atomic; a
  concurrent preparation of the same store loses the race harmlessly). On gs://, where rename
  is a copy, files are written in place and meta.json, written last, is the commit. What stands
  at `directory` is replaced only where `check_replaceable` allows it (a store, with
  `overwrite`; nothing of the user's); otherwise StoreError, before any work.
  """

  def __init__(self, directory: str | os.PathLike, *, kind: str, name: str,
               settings: Mapping[str, Any], inputs: Sequence[Mapping[str, Any]],
               overwrite: bool = False):
    self.directory = epath.Path(directory)
    self.kind, self.name = kind, name
    self.settings, self.inputs = dict(settings), list(inputs)
    self.overwrite = overwrite
    self.t0 = time.time()
    check_replaceable(self.directory)
    if _is_remote(self.directory):
      self.tmp = self.directory
      if (self.tmp / 'meta.json').exists():
        if not overwrite:
          raise FileExistsError(f'{self.directory}: a store exists already')
        (self.tmp / 'meta.json').unlink()
    else:
      self.tmp = epath.Path(f'{self.directory}.tmp-{uuid.uuid4().hex[:8]}')
    # writer.json first: a sweep by another process (`remove_stale_temporaries`) sees whose it is.
    self.tmp.mkdir(parents=True, exist_ok=True)
    (self.tmp / WRITER).write_text(json.dumps(
        {'format': f'{FORMAT}.writer', 'host': socket.gethostname(), 'pid': os.getpid(),
         'started': time.time()}))
    (self.tmp / 'texts').mkdir(exist_ok=True)
    (self.tmp / 'index').mkdir(exist_ok=True)

  def text_path(self, lang: str) -> epath.Path:
    return self.tmp / 'texts' / f'{lang}.array_record'

  def save_records(self, lang: str, records: np.ndarray) -> None:
    save_array(self.tmp / 'texts' / f'{lang}.records.npy', np.asarray(records, np.int32))

  def save_index(self, lang: str, index: LangIndex) -> None:
    for field in _INDEX_FIELDS:
      dtype = np.int64 if field == 'negative_offsets' else np.int32
      save_array(self.tmp / 'index' / f'{lang}.{field}.npy',
                 np.asarray(getattr(index, field), dtype))

  def _files(self) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file written (relative path -> record)."""
    out = {}
    for d in ('', 'texts', 'index'):
      for p in sorted((self.tmp / d).glob('*') if d else self.tmp.glob('*')):
        rel = f'{d}/{p.name}' if d else p.name
        if p.is_dir() or rel in ('meta.json', WRITER):
          continue
        out[rel] = {'size': int(p.stat().length), 'sha256': file_digest(p)}
    return out

  def finish(self, *, langs: Sequence[str], aligned: bool, group_ids: Sequence[str],
             group_identity: np.ndarray, mono: bool = True,
             counts: Mapping[str, Any] | None = None) -> 'Store':
    """Writes the group ids, group identities and meta.json, and publishes the store."""
    write_texts(self.tmp / 'groups.array_record', group_ids)
    save_array(self.tmp / 'index' / 'group_identity.npy', np.asarray(group_identity, np.int32))
    meta = {'format': FORMAT, 'version': VERSION, 'name': self.name,
            'kind': self.kind, 'settings': self.settings, 'inputs': self.inputs,
            'langs': list(langs), 'aligned': bool(aligned), 'mono': bool(mono),
            'num_groups': len(group_ids), 'counts': dict(counts or {}),
            'fingerprint': content_fingerprint(self.kind, self.settings, self.inputs),
            'files': self._files(), 'prepare_seconds': round(time.time() - self.t0, 2)}
    meta = json.loads(json.dumps(meta))  # as it will read back (tuples become lists)
    meta['meta_sha256'] = meta_digest(meta)
    (self.tmp / 'meta.json').write_text(json.dumps(meta, indent=1, sort_keys=True))
    (self.tmp / WRITER).unlink()
    if self.tmp != self.directory:
      self._publish()
    logging.info('store %s: %d groups, %s, prepared in %.1fs', self.directory, len(group_ids),
                 meta['counts'], meta['prepare_seconds'])
    return Store(self.directory)

  def _publish(self) -> None:
    """Renames the finished temporary store into place, replacing only what it may."""
    path = str(self.directory)
    if _made_here(self.directory):
      if not self.overwrite and is_store(path):
        # Another process prepared the same store meanwhile: keep the first.
        shutil.rmtree(str(self.tmp))
        return
      aside = f'{path}.old-{uuid.uuid4().hex[:8]}'
      os.rename(path, aside)
      os.rename(str(self.tmp), path)
      if os.path.islink(aside):
        os.unlink(aside)  # a link to a store elsewhere: the link is replaced, not its target
      else:
        shutil.rmtree(aside)
      return
    try:
      check_replaceable(path)  # something may have appeared there while this one was written
    except StoreError:
      shutil.rmtree(str(self.tmp))
      raise
    if os.path.lexists(path):
      _remove_empty_tree(self.directory)
    self.directory.parent.mkdir(parents=True, exist_ok=True)
    os.rename(str(self.tmp), path)

  def abort(self) -> None:
    if self.tmp != self.directory and self.tmp.exists():
      shutil.rmtree(str(self.tmp), ignore_errors=True)


def meta_digest(meta: Mapping[str, Any]) -> str:
  """sha256 of a store's meta.json content, without the field that records it."""
  rest = {k: v for k, v in meta.items() if k != 'meta_sha256'}
  return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def write_tables(builder: Builder, *, langs: Sequence[str], group_ids: Sequence[str],
                 texts: Mapping[str, Sequence[str]], group_query: Mapping[str, np.ndarray],
                 group_positive: Mapping[str, np.ndarray],
                 negatives: Mapping[str, Sequence[Sequence[int]]], same_text: bool,
                 extra_edges: Sequence[tuple[tuple[str, int], tuple[str, int]]] = (),
                 mono: bool = True, counts: Mapping[str, Any] | None = None) -> 'Store':
  """Writes a source prepared in memory (SQuAD, JSONL, bitext): per language its texts, each
  group's query and positive row and its negative rows.

  Identities: positives of one group across languages, positives of groups sharing a query
  row, `extra_edges` ((lang, row) pairs, e.g. a JSONL positive_id), and, with `same_text`,
  rows of one language whose normalised texts are equal.
  """
  offset = {}
  total = 0
  for l in langs:
    offset[l] = total
    total += len(texts[l])
  a, b = [], []
  g = len(group_ids)
  for l in langs:
    pos = np.asarray(group_positive[l], np.int64)
    q = np.asarray(group_query[l], np.int64)
    has = pos >= 0
    nodes = offset[l] + pos[has]
    # Positives of one group are one passage, in every language.
    ea, eb = chain_edges(np.flatnonzero(has), nodes)
    a.append(ea)
    b.append(eb)
    # Groups sharing a query row: their positives are all answers to one query.
    ea, eb = chain_edges(q[has], nodes)
    a.append(ea)
    b.append(eb)
    if same_text:
      ea, eb = chain_edges(text_keys(texts[l]), offset[l] + np.arange(len(texts[l])))
      a.append(ea)
      b.append(eb)
  # Link each group's positives across languages: chain per group over languages.
  firsts = np.full(g, -1, np.int64)
  for l in langs:
    pos = np.asarray(group_positive[l], np.int64)
    has = pos >= 0
    node = offset[l] + pos
    link = has & (firsts >= 0)
    a.append(firsts[link])
    b.append(node[link])
    firsts = np.where(has & (firsts < 0), node, firsts)
  if extra_edges:
    a.append(np.array([offset[l] + r for (l, r), _ in extra_edges], np.int64))
    b.append(np.array([offset[l] + r for _, (l, r) in extra_edges], np.int64))
  comp = components(total, np.concatenate(a) if a else np.zeros(0, np.int64),
                    np.concatenate(b) if b else np.zeros(0, np.int64))
  _, ident = np.unique(comp, return_inverse=True)
  ident = ident.astype(np.int32)
  if (firsts < 0).any():
    raise ValueError(f'store {builder.name}: groups without a positive in any language: '
                     f'{[group_ids[i] for i in np.flatnonzero(firsts < 0)[:5]]}')
  for l in langs:
    write_texts(builder.text_path(l), texts[l])
    offsets, rows = csr(negatives[l])
    builder.save_index(l, LangIndex(
        group_query=group_query[l], group_positive=group_positive[l], negative_offsets=offsets,
        negative_rows=rows, row_identity=ident[offset[l]:offset[l] + len(texts[l])]))
  return builder.finish(langs=langs, aligned=False, group_ids=group_ids,
                        group_identity=ident[firsts], mono=mono, counts=counts)


# --------------------------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------------------------

class Store:
  """Read side of a prepared store (see the module docstring).

  Inputs: the store directory (local or gs://). Recommended for: the sampler (integer indexes)
  and the input pipeline (`texts`). Opening checks the store's bytes (meta.json's digest, the
  .npy files' sha256s, every file's size, small texts' sha256s) and raises StoreError naming
  the file on a mismatch; `verify()` checks every sha256. Arrays are memory-mapped from local
  files and read whole from remote ones; texts are read by random access, or held in memory for
  small languages (`CACHE_TEXTS_BELOW_BYTES`). Safe to share between the threads of a tf.data
  map.
  """

  def __init__(self, directory: str | os.PathLike):
    self.directory = epath.Path(directory)
    self._lock = threading.RLock()
    meta_path = self.directory / 'meta.json'
    if not meta_path.exists():
      raise FileNotFoundError(f'{self.directory}: not a complete store (no meta.json); prepare '
                              'it with `python -m hybrid_ir.prepare --config <config>`')
    self.meta = _read_json(meta_path)
    if not isinstance(self.meta, dict):
      raise self._damaged('meta.json', 'is not a JSON object')
    if self.meta.get('format') != FORMAT:
      raise StoreError(f'{self.directory} is not a hybrid_ir store (its meta.json has format '
                       f'{self.meta.get("format")!r}, not {FORMAT!r})')
    if self.meta.get('version') != VERSION:
      raise StoreError(f'store {self.directory}: format {self.meta.get("format")!r} version '
                       f'{self.meta.get("version")!r}; this code reads version {VERSION}: '
                       f'{PREPARE_AGAIN}')
    if self.meta.get('meta_sha256') != meta_digest(self.meta):
      raise self._damaged('meta.json', 'was changed after preparation (its content does not '
                          'match the digest it recorded)')
    self._arrays: dict[str, np.ndarray] = {}
    self._check(full=False)
    self.name = self.meta['name']
    self.langs: tuple[str, ...] = tuple(self.meta['langs'])
    self.num_groups = int(self.meta['num_groups'])
    self.aligned = bool(self.meta['aligned'])
    self.mono = bool(self.meta.get('mono', True))
    self.fingerprint = self.meta['fingerprint']
    # What the store's bytes are: changes with any file, and is the same wherever the store lies.
    self.content_digest = hashlib.sha256(json.dumps(
        {k: v['sha256'] for k, v in self.meta['files'].items()}, sort_keys=True).encode()
    ).hexdigest()[:16]
    self.group_identity = self._array('index/group_identity.npy')
    if len(self.group_identity) != self.num_groups:
      raise self._damaged('index/group_identity.npy', f'has {len(self.group_identity)} groups, '
                          f'meta.json {self.num_groups}')
    self._index: dict[str, LangIndex] = {}
    self._records: dict[str, np.ndarray | None] = {}
    self._cached: dict[str, list[bytes] | None] = {}  # path -> texts, or None: read on demand
    self._readers = {}

  def _damaged(self, rel: str, problem: str) -> StoreError:
    return StoreError(f'store {self.directory}: {rel} {problem}; {PREPARE_AGAIN}')

  def _check(self, full: bool) -> int:
    """Checks the files against meta.json: every size; the sha256 of .npy files, of files read
    whole (below CACHE_TEXTS_BELOW_BYTES), or of all with `full`. Returns the bytes hashed."""
    hashed = 0
    for rel, want in sorted(self.meta.get('files', {}).items()):
      path = self.directory / rel
      if not path.exists():
        raise self._damaged(rel, 'is missing')
      size = int(path.stat().length)
      if size != want['size']:
        raise self._damaged(rel, f'has {size} bytes, {want["size"]} when it was prepared '
                            '(truncated or changed)')
      if not (full or rel.endswith('.npy') or size < CACHE_TEXTS_BELOW_BYTES):
        continue
      if _is_remote(path) and rel.endswith('.npy'):
        raw = path.read_bytes()  # read once: hashed here, kept as the array
        got = hashlib.sha256(raw).hexdigest()
        if got == want['sha256']:
          self._arrays[rel] = np.load(io.BytesIO(raw))
      else:
        got = file_digest(path)
      hashed += size
      if got != want['sha256']:
        raise self._damaged(rel, 'does not match the sha256 recorded when it was prepared '
                            '(damaged or changed)')
    return hashed

  def verify(self) -> int:
    """Checks every file's sha256 against meta.json (reads the whole store); returns the bytes
    read. Raises StoreError naming the first file that differs."""
    return self._check(full=True)

  def _array(self, rel: str) -> np.ndarray:
    with self._lock:
      if rel not in self._arrays:
        path = self.directory / rel
        if _is_remote(path):
          self._arrays[rel] = np.load(io.BytesIO(path.read_bytes()))
        else:
          self._arrays[rel] = np.load(str(path), mmap_mode='r')
      return self._arrays[rel]

  def index(self, lang: str) -> LangIndex:
    """The index arrays of `lang` (the shared ones in an aligned store)."""
    if lang not in self.langs:
      raise KeyError(f'store {self.name}: no language {lang!r}; has {list(self.langs)}')
    key = ALL if self.aligned else lang
    with self._lock:
      if key not in self._index:
        self._index[key] = LangIndex(**{f: self._array(f'index/{key}.{f}.npy')
                                        for f in _INDEX_FIELDS})
      return self._index[key]

  def _reader(self, path: epath.Path):
    # One reader per file, shared by the tf.data threads (its reads are thread-safe): opening
    # one loads the file's chunk index, seconds and ~50 MB for millions of records.
    with self._lock:
      if path not in self._readers:
        from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
        self._readers[path] = array_record_module.ArrayRecordReader(str(path),
                                                                    'readahead_buffer_size:0')
      return self._readers[path]

  def _read(self, path: epath.Path, records: Sequence[int]) -> list[bytes]:
    if not records:
      return []
    try:
      with self._lock:
        if str(path) not in self._cached:
          small = path.stat().length < CACHE_TEXTS_BELOW_BYTES
          self._cached[str(path)] = list(self._reader(path).read_all()) if small else None
        cached = self._cached[str(path)]
      if cached is not None:
        return [cached[r] for r in records]
      return list(self._reader(path).read(list(records)))
    except Exception as e:  # pylint: disable=broad-except
      # riegeli's own chunk hashes caught damage (e.g. "Corrupted Riegeli/records file"): name
      # the file instead of a reader's traceback.
      rel = os.path.relpath(str(path), str(self.directory))
      first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
      raise self._damaged(rel, f'cannot be read ({first})') from e

  def texts(self, lang: str, rows: Sequence[int] | np.ndarray) -> list[str]:
    """The texts of `rows` in `lang`."""
    with self._lock:
      if lang not in self._records:
        rel = f'texts/{lang}.records.npy'
        self._records[lang] = self._array(rel) if rel in self.meta['files'] else None
    records = self._records[lang]
    rows = np.asarray(rows, np.int64)
    recs = rows if records is None else records[rows]
    return [b.decode('utf-8') for b in self._read(self.directory / 'texts' /
                                                  f'{lang}.array_record', recs.tolist())]

  def group_ids(self, groups: Sequence[int] | np.ndarray) -> list[str]:
    """The id strings of `groups` (e.g. the SQuAD question ids)."""
    return [b.decode('utf-8') for b in self._read(self.directory / 'groups.array_record',
                                                  np.asarray(groups, np.int64).tolist())]

  def negatives(self, lang: str, group: int) -> np.ndarray:
    """The negative rows of `group` in `lang`."""
    idx = self.index(lang)
    return np.asarray(idx.negative_rows[idx.negative_offsets[group]:
                                        idx.negative_offsets[group + 1]])
