"""The prepared training store: one source on disk as texts plus compact integer indexes.

Why it exists: at the paper's scale (mMARCO: 39.8M id triples, 8.8M passages in each of 7
languages) no host may hold a Python object per record, parse the raw files at every start, or
need a copy of the corpus on its boot disk. A source is therefore prepared once
(`python -m hybrid_ir.prepare`, or on first use for small sources) into this store, and training
hosts read it by random access, locally or from gs://: in memory they hold integer arrays only
(memory-mapped where the file is local), and fetch the texts of their slice of each batch.

Layout of a store directory:
  meta.json                       written last; a directory without it is incomplete and is
                                  never read (preparation killed half way leaves no store).
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
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from etils import epath
import numpy as np

VERSION = 1
ALL = 'all'  # the index language of an aligned store
# Texts of a language whose file is below this size are read into memory once: small sources
# (LAReQA, the demo) then cost no I/O per batch.
CACHE_TEXTS_BELOW_BYTES = 16 << 20
_INDEX_FIELDS = ('group_query', 'group_positive', 'negative_offsets', 'negative_rows',
                 'row_identity')


def _is_remote(path: epath.Path) -> bool:
  return '://' in str(path)


def file_fingerprints(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
  """Path, size and modification time of each input file: what decides whether a store is stale.

  Raises FileNotFoundError naming a missing file.
  """
  out = []
  for p in paths:
    path = epath.Path(p)
    if not path.is_file():
      raise FileNotFoundError(f'training source file not found: {path}')
    st = path.stat()
    out.append({'path': str(path), 'size': int(st.length), 'mtime': int(st.mtime)})
  return out


def file_digest(path: str | os.PathLike) -> str:
  """sha256 of a file's bytes, read in 8 MiB chunks (local or gs://)."""
  h = hashlib.sha256()
  with epath.Path(path).open('rb') as f:
    while chunk := f.read(8 << 20):
      h.update(chunk)
  return h.hexdigest()


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

  Locally the temporary directory is renamed into place (atomic; a concurrent preparation of
  the same store loses the race harmlessly). On gs://, where rename is a copy, files are
  written in place and meta.json, written last, is the commit.
  """

  def __init__(self, directory: str | os.PathLike, *, kind: str, name: str,
               settings: Mapping[str, Any], inputs: Sequence[Mapping[str, Any]],
               overwrite: bool = False):
    self.directory = epath.Path(directory)
    self.kind, self.name = kind, name
    self.settings, self.inputs = dict(settings), list(inputs)
    self.overwrite = overwrite
    self.t0 = time.time()
    if _is_remote(self.directory):
      self.tmp = self.directory
      if (self.tmp / 'meta.json').exists():
        if not overwrite:
          raise FileExistsError(f'{self.directory}: a store exists already')
        (self.tmp / 'meta.json').unlink()
    else:
      self.tmp = epath.Path(f'{self.directory}.tmp-{uuid.uuid4().hex[:8]}')
    (self.tmp / 'texts').mkdir(parents=True, exist_ok=True)
    (self.tmp / 'index').mkdir(parents=True, exist_ok=True)

  def text_path(self, lang: str) -> epath.Path:
    return self.tmp / 'texts' / f'{lang}.array_record'

  def save_records(self, lang: str, records: np.ndarray) -> None:
    save_array(self.tmp / 'texts' / f'{lang}.records.npy', np.asarray(records, np.int32))

  def save_index(self, lang: str, index: LangIndex) -> None:
    for field in _INDEX_FIELDS:
      dtype = np.int64 if field == 'negative_offsets' else np.int32
      save_array(self.tmp / 'index' / f'{lang}.{field}.npy',
                 np.asarray(getattr(index, field), dtype))

  def finish(self, *, langs: Sequence[str], aligned: bool, group_ids: Sequence[str],
             group_identity: np.ndarray, mono: bool = True,
             counts: Mapping[str, Any] | None = None) -> 'Store':
    """Writes the group ids, group identities and meta.json, and publishes the store."""
    write_texts(self.tmp / 'groups.array_record', group_ids)
    save_array(self.tmp / 'index' / 'group_identity.npy', np.asarray(group_identity, np.int32))
    # The data's identity (which a resumed run's input state is checked against): contents,
    # not where the files lie or when they were copied.
    contents = [(i.get('size'), i.get('sha256')) for i in self.inputs]
    content = {'kind': self.kind, 'settings': self.settings, 'inputs': contents,
               'version': VERSION}
    meta = {'format': 'hybrid_ir.store', 'version': VERSION, 'name': self.name,
            'kind': self.kind, 'settings': self.settings, 'inputs': self.inputs,
            'langs': list(langs), 'aligned': bool(aligned), 'mono': bool(mono),
            'num_groups': len(group_ids), 'counts': dict(counts or {}),
            'fingerprint': hashlib.sha256(json.dumps(content, sort_keys=True).encode()
                                          ).hexdigest()[:16],
            'prepare_seconds': round(time.time() - self.t0, 2)}
    (self.tmp / 'meta.json').write_text(json.dumps(meta, indent=1, sort_keys=True))
    if self.tmp != self.directory:
      if is_complete(self.directory) and not self.overwrite:
        # Another process prepared the same store meanwhile: keep the first.
        shutil.rmtree(str(self.tmp))
        return Store(self.directory)
      if self.directory.exists():  # overwritten, or left incomplete on a remote filesystem
        shutil.rmtree(str(self.directory))
      self.directory.parent.mkdir(parents=True, exist_ok=True)
      os.rename(str(self.tmp), str(self.directory))
    logging.info('store %s: %d groups, %s, prepared in %.1fs', self.directory, len(group_ids),
                 meta['counts'], meta['prepare_seconds'])
    return Store(self.directory)

  def abort(self) -> None:
    if self.tmp != self.directory and self.tmp.exists():
      shutil.rmtree(str(self.tmp), ignore_errors=True)


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

def is_complete(directory: str | os.PathLike) -> bool:
  return (epath.Path(directory) / 'meta.json').exists()


class Store:
  """Read side of a prepared store (see the module docstring).

  Inputs: the store directory (local or gs://). Recommended for: the sampler (integer indexes)
  and the input pipeline (`texts`). Arrays are memory-mapped from local files and read whole
  from remote ones; texts are read by random access, or held in memory for small languages
  (`CACHE_TEXTS_BELOW_BYTES`). Safe to share between the threads of a tf.data map.
  """

  def __init__(self, directory: str | os.PathLike):
    self.directory = epath.Path(directory)
    meta_path = self.directory / 'meta.json'
    if not meta_path.exists():
      raise FileNotFoundError(f'{self.directory}: not a complete store (no meta.json); prepare '
                              'it with `python -m hybrid_ir.prepare --config <config>`')
    self.meta = json.loads(meta_path.read_text())
    if self.meta.get('format') != 'hybrid_ir.store' or self.meta.get('version') != VERSION:
      raise ValueError(f'{meta_path}: store format {self.meta.get("format")!r} version '
                       f'{self.meta.get("version")!r}; this code reads version {VERSION}: '
                       'prepare it again')
    self.name = self.meta['name']
    self.langs: tuple[str, ...] = tuple(self.meta['langs'])
    self.num_groups = int(self.meta['num_groups'])
    self.aligned = bool(self.meta['aligned'])
    self.mono = bool(self.meta.get('mono', True))
    self.fingerprint = self.meta['fingerprint']
    self.group_identity = self._array('index/group_identity.npy')
    self._index: dict[str, LangIndex] = {}
    self._records: dict[str, np.ndarray | None] = {}
    self._cached: dict[str, list[bytes] | None] = {}  # path -> texts, or None: read on demand
    self._readers = {}
    self._lock = threading.RLock()

  def _array(self, rel: str) -> np.ndarray:
    path = self.directory / rel
    if _is_remote(path):
      return np.load(io.BytesIO(path.read_bytes()))
    return np.load(str(path), mmap_mode='r')

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
    with self._lock:
      if str(path) not in self._cached:
        small = path.stat().length < CACHE_TEXTS_BELOW_BYTES
        self._cached[str(path)] = list(self._reader(path).read_all()) if small else None
      cached = self._cached[str(path)]
    if cached is not None:
      return [cached[r] for r in records]
    return list(self._reader(path).read(list(records)))

  def texts(self, lang: str, rows: Sequence[int] | np.ndarray) -> list[str]:
    """The texts of `rows` in `lang`."""
    with self._lock:
      if lang not in self._records:
        rel = f'texts/{lang}.records.npy'
        self._records[lang] = self._array(rel) if (self.directory / rel).exists() else None
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
