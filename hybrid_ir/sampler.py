"""The global batch of step s: which examples (group, query language, passage language) it holds.

Shape (docs/design.md, "The data flow"): stores -> one *stream* per (source, query_lang, passage_lang)
over the groups that have both languages -> `schedule.batch_plan(seed, step)` says which streams
fill the slots of global batch `step` -> the slots draw from their streams, never two examples
of one passage identity in a batch.

Topology-independent: every host computes the same *global* batch (a few hundred integers; it
reads no text) and then fetches only its own rows (`batch_rows`, at `sharding.host_rows`). So the
batch at step s is a function of (data, config, seed, step) alone, identical on 1, 2 or 4
processes, and hosts' slices are disjoint parts of one random draw rather than correlated streams
of their own.

Streams: the groups of a stream in epoch e are in the order of a counter-based permutation
(`index_shuffle`, as Grain shuffles) keyed by (seed, stream, epoch): the k-th draw is computed
in O(1) from k, with no permutation held in memory, so a stream's state is one integer (its
position).

No duplicate identities (sentence-transformers' NO_DUPLICATES sampler, applied to meaning): a
draw whose passage identity is already in the batch (the same answer sentence or its
translation, the same mMARCO passage, a repeated Bible verse) is *deferred*, not dropped: the
stream keeps its position in a pending list and offers it first the next time it is drawn from.
Every group therefore appears once per epoch of each stream, give or take deferral.

State: step, stream positions and pending lists: a small JSON-able dict identical on every host,
so restoring it is O(1) on any host and any number of hosts.
"""
import dataclasses
import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np

from hybrid_ir import schedule as schedule_lib
from hybrid_ir.data import store as store_lib

STATE_VERSION = 2
_M64 = (1 << 64) - 1


def _crc(*parts: Any) -> int:
  return zlib.crc32('|'.join(map(str, parts)).encode('utf-8'))


def _splitmix64(x: int) -> int:
  """splitmix64's finaliser: a 64-bit bijection whose output bits all depend on every input bit."""
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
  return x ^ (x >> 31)


def index_shuffle(index: int, size: int, seed: int, rounds: int = 4) -> int:
  """Position `index` of a pseudo-random permutation of [0, size) keyed by `seed`, in O(1).

  A balanced Feistel network over the smallest power of four >= size, cycle-walked into
  [0, size) (at most 4 walks expected): the construction of Grain's `index_shuffle`. Grain's
  own is not used because it is slower per index on small domains, such as a LAReQA stream of
  about a thousand groups, than on large ones.
  """
  if not 0 <= index < size:
    raise ValueError(f'index_shuffle: index {index} not in [0, {size})')
  bits = max(2, (size - 1).bit_length())
  half = (bits + 1) // 2
  mask = (1 << half) - 1
  key = _splitmix64(seed & _M64)
  x = index
  while True:
    left, right = x >> half, x & mask
    for r in range(rounds):
      left, right = right, left ^ (_splitmix64(key ^ (right << 8) ^ r) & mask)
    x = (left << half) | right
    if x < size:
      return x


@dataclasses.dataclass
class Stream:
  """The groups of one (source, query_lang, passage_lang), epoch after epoch."""
  key: str
  groups: np.ndarray | None  # eligible group indices, sorted; None = all groups
  size: int
  seed: int

  def at(self, position: int) -> tuple[int, int]:
    """(group, epoch) of the draw at `position` (0-based, counting every draw)."""
    epoch, i = divmod(position, self.size)
    j = index_shuffle(i, self.size, _crc(self.seed, self.key, epoch))
    return (j if self.groups is None else int(self.groups[j])), epoch


NEGATIVE_LANGS = ('passage', 'query+passage')


@dataclasses.dataclass
class Source:
  """One training source as the sampler sees it: a store, the languages drawn and options."""
  name: str
  store: store_lib.Store
  langs: tuple[str, ...]
  num_negatives: int
  offset: int  # added to group indices so example ids are unique across sources
  # 'passage': an example's hard negatives are passages of its passage language; 'query+passage':
  # an X->Y example (X != Y) takes half of them in X, so that a cross-lingual query also meets
  # wrong passages in its own language (`example_rows`).
  negative_langs: str = 'passage'

  @property
  def group_identity(self) -> np.ndarray:
    return self.store.group_identity


def make_source(name: str, store: store_lib.Store, cfg: Mapping[str, Any], offset: int,
                languages: Sequence[str] | None = None) -> Source:
  """Checks a source config's selection (`langs`, `num_negatives`) against its store.

  `languages` (the input config's, if any) further restricts every source's languages.
  """
  langs = list(cfg.get('langs') or store.langs)
  if not set(langs) <= set(store.langs):
    raise ValueError(f'input: source {name!r}: languages '
                     f'{[l for l in langs if l not in store.langs]} are not in its data; '
                     f'available: {list(store.langs)}')
  if languages:
    langs = [l for l in langs if l in languages]
    if not langs:
      raise ValueError(f'input: source {name!r} has none of input.languages {list(languages)} '
                       f'(it has {list(store.langs)})')
  k = int(cfg.get('num_negatives', 0) or 0)
  if k < 0:
    raise ValueError(f'input: source {name!r}: num_negatives must be >= 0, got {k}')
  negative_langs = cfg.get('negative_langs', 'passage')
  if negative_langs not in NEGATIVE_LANGS:
    raise ValueError(f'input: source {name!r}: negative_langs={negative_langs!r}; valid: '
                     f'{", ".join(NEGATIVE_LANGS)}')
  return Source(name, store, tuple(langs), k, offset, negative_langs)


class Sampler:
  """Global batches of example indices from the schedule; no text, no threads.

  Inputs: sources (name -> `Source`); the input config: `batch_size` (global), `seed`,
  `too_few` ('drop' | 'error'), and the schedule fields (`type_probs`, `source_temperature`,
  `mono_lang_sampling`, `lang_temperature`, `cross_pairs`; see `schedule.make_spec`).
  Recommended for: the input pipeline, and for inspecting what a run trains on.
  Related: `batch_rows`, `hybrid_ir.input_pipeline.Pipeline`.
  """

  def __init__(self, sources: Mapping[str, Source], config: Any):
    self.batch_size = int(config.get('batch_size', 0) or 0)
    if self.batch_size <= 0:
      raise ValueError(f'input: batch_size must be > 0, got {self.batch_size}')
    self.seed = int(config.get('seed', 0))
    too_few = config.get('too_few', 'drop')
    if too_few not in ('drop', 'error'):
      raise ValueError(f"input: too_few must be 'drop' or 'error', got {too_few!r}")
    if not sources:
      raise ValueError('input: no sources')
    self.sources = dict(sources)
    self.streams: dict[str, Stream] = {}
    specs = [self._streams_of(s, too_few) for s in self.sources.values()]
    self.spec = schedule_lib.make_spec(config, specs)
    self.step = 0
    self.positions = {k: 0 for k in self.streams}
    self.pending: dict[str, list[int]] = {k: [] for k in self.streams}
    self._deferred: dict[tuple[str, int], tuple[int, int]] = {}  # (group, epoch) of pending draws
    self.deferrals = 0
    # Identical on every host and for every topology: a state saved anywhere restores anywhere.
    self.fingerprint = hashlib.sha256(json.dumps(
        [dataclasses.asdict(self.spec), self.seed,
         {n: [s.store.fingerprint, s.langs, s.num_negatives, s.offset]
          + ([s.negative_langs] if s.negative_langs != 'passage' else [])
          for n, s in sorted(self.sources.items())}], sort_keys=True, default=str
    ).encode()).hexdigest()[:16]

  def _streams_of(self, source: Source, too_few: str) -> schedule_lib.SourceSpec:
    store, ident = source.store, source.group_identity
    present = {}  # lang -> (has query, has positive) boolean masks, or None (all, aligned)
    for l in source.langs:
      idx = store.index(l)
      present[l] = None if store.aligned else (np.asarray(idx.group_query) >= 0,
                                               np.asarray(idx.group_positive) >= 0)
    pairs, dropped = [], []
    all_identities = len(np.unique(ident)) if store.aligned else None
    for q in source.langs:
      for p in source.langs:
        if q == p and not store.mono:
          continue  # query and positive would be the same text
        if store.aligned:
          groups, distinct = None, all_identities
        else:
          groups = np.flatnonzero(present[q][0] & present[p][1]).astype(np.int32)
          distinct = len(np.unique(ident[groups]))
        # A batch needs batch_size distinct identities from every stream it may draw on.
        if distinct < self.batch_size:
          dropped.append(((q, p), distinct))
          continue
        key = f'{source.name}|{q}|{p}'
        size = store.num_groups if groups is None else len(groups)
        self.streams[key] = Stream(key, groups, size, self.seed)
        pairs.append((q, p))
    if dropped:
      msg = (f'input: source {source.name!r}: language pairs with fewer distinct passages than '
             f'batch_size {self.batch_size} (pair, distinct passage identities): {dropped}')
      if too_few == 'error' or not pairs:
        ns = sorted(n for _, n in dropped)
        fit = (f'input.batch_size <= {ns[0]} keeps every pair' if pairs else
               f'input.batch_size <= {ns[-1]} keeps {ns.count(ns[-1])} pair(s), <= {ns[0]} '
               'every pair')
        raise ValueError(msg + ('' if pairs else '; no pair left') + f'. {fit} (a batch needs '
                         "that many distinct passages; configs/own_data.py's arg: batch=N)")
      logging.warning('%s; dropped (too_few=drop)', msg)
    sizes = {}
    for l in source.langs:
      sizes[l] = store.num_groups if present[l] is None else int(present[l][0].sum())
    groups_in_langs = (store.num_groups if store.aligned else
                       int(np.logical_or.reduce([present[l][0] for l in source.langs]).sum()))
    logging.info('input: source %s: %d groups in %s, %d language pairs', source.name,
                 groups_in_langs, list(source.langs), len(pairs))
    # Sources are weighted by groups (distinct queries), not by lines or triples.
    return schedule_lib.SourceSpec(name=source.name, size=groups_in_langs,
                                   lang_sizes=tuple(sorted(sizes.items())), pairs=tuple(pairs))

  # --- state ---

  def get_state(self) -> dict[str, Any]:
    """The position before the next batch: a small JSON-able dict, the same on every host."""
    return {'version': STATE_VERSION, 'step': self.step, 'positions': dict(self.positions),
            'pending': {k: list(v) for k, v in self.pending.items() if v},
            'deferrals': self.deferrals, 'fingerprint': self.fingerprint}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a `get_state()` dict (from any host, any topology) in O(1); raises if the data or
    config changed since it was saved."""
    if state.get('version') != STATE_VERSION:
      raise ValueError(f'input state: version {state.get("version")!r}, expected '
                       f'{STATE_VERSION} (saved by an older hybrid_ir; start a fresh workdir)')
    if state.get('fingerprint') != self.fingerprint:
      raise ValueError(f'input state: fingerprint {state.get("fingerprint")!r} but this pipeline '
                       f'has {self.fingerprint!r}: the data, sources or input config changed '
                       'since the checkpoint was saved')
    if set(state['positions']) != set(self.streams):
      raise ValueError("input state: stream names differ from this pipeline's")
    self.step = int(state['step'])
    self.positions = {k: int(v) for k, v in state['positions'].items()}
    self.pending = {k: [int(x) for x in state.get('pending', {}).get(k, [])]
                    for k in self.streams}
    self.deferrals = int(state.get('deferrals', 0))
    self._deferred = {}

  # --- batches ---

  def _draw(self, key: str, used: set[int], ident: np.ndarray) -> tuple[int, int]:
    stream, pending = self.streams[key], self.pending[key]
    for i, position in enumerate(pending):
      group, epoch = self._deferred.get((key, position)) or stream.at(position)
      if int(ident[group]) not in used:
        del pending[i]
        self._deferred.pop((key, position), None)
        return group, epoch
    # Terminates within one epoch: the stream holds >= batch_size distinct identities and
    # fewer than that are used.
    for _ in range(stream.size + 1):
      position = self.positions[key]
      self.positions[key] += 1
      group, epoch = stream.at(position)
      if int(ident[group]) not in used:
        return group, epoch
      pending.append(position)
      self._deferred[(key, position)] = (group, epoch)
      self.deferrals += 1
    raise RuntimeError(f'input: no draw with a new passage identity in stream {key} (a bug)')

  def next_batch(self) -> dict[str, Any]:
    """The next global batch: step, batch_type, source, and per slot query_lang, passage_lang,
    group (index in its source) and epoch (of its stream)."""
    plan = schedule_lib.batch_plan(self.spec, self.seed, self.step)
    source = self.sources[plan.source]
    ident = source.group_identity
    used: set[int] = set()
    groups, epochs = [], []
    for q, p in zip(plan.query_langs, plan.passage_langs):
      group, epoch = self._draw(f'{plan.source}|{q}|{p}', used, ident)
      used.add(int(ident[group]))
      groups.append(group)
      epochs.append(epoch)
    for key, pending in self.pending.items():
      if len(pending) > max(64, 2 * self.batch_size):
        raise RuntimeError(f'input: stream {key} has {len(pending)} deferred draws: its groups '
                           f'share too few passage identities for batch_size {self.batch_size}')
    self.step += 1
    # The text rows the batch will read, and the bytes they are read from: what the batch
    # fingerprint covers besides the examples' names.
    rows = [example_rows(source, q, p, g, e, source.num_negatives)
            for q, p, g, e in zip(plan.query_langs, plan.passage_langs, groups, epochs)]
    return {'step': plan.step, 'batch_type': plan.batch_type, 'source': plan.source,
            'query_lang': plan.query_langs, 'passage_lang': plan.passage_langs,
            'group': np.asarray(groups, np.int64), 'epoch': np.asarray(epochs, np.int64),
            # A negative outside the passage language is named with its language.
            'rows': [[q, p, *(r if l == pl else f'{l}:{r}' for l, r in n)]
                     for (q, p, n), pl in zip(rows, plan.passage_langs)],
            'content': source.store.content_digest}


def example_rows(source: Source, query_lang: str, passage_lang: str, group: int, epoch: int,
                 num_negatives: int) -> tuple[int, int, list[tuple[str, int]]]:
  """(query row in query_lang, positive row in passage_lang, [(language, row)] of its hard
  negatives) of one example.

  Negatives are passages of passage_lang; with the source's negative_langs 'query+passage', an
  example whose languages differ takes K // 2 of them from the group's negatives in query_lang
  (listed after the passage-language ones). From each list, the example of epoch e takes the
  group's negatives e*k, e*k+1, ... (mod their count), k the number taken from it, so epochs see
  different negatives. Used by the sampler (for the batch fingerprint) and by
  `input_pipeline.read_slice` (to read them).
  """
  qi, pi = source.store.index(query_lang), source.store.index(passage_lang)
  q_row, p_row = int(qi.group_query[group]), int(pi.group_positive[group])
  if q_row < 0 or p_row < 0:
    raise RuntimeError(f'input: group {group} of {source.name} has no ({query_lang}, '
                       f'{passage_lang}) pair (a bug)')
  from_query = []
  if source.negative_langs == 'query+passage' and query_lang != passage_lang:
    from_query = _negatives(qi, group, epoch, num_negatives // 2)
  from_passage = _negatives(pi, group, epoch, num_negatives - len(from_query))
  return q_row, p_row, ([(passage_lang, r) for r in from_passage]
                        + [(query_lang, r) for r in from_query])


def _negatives(index: store_lib.LangIndex, group: int, epoch: int, k: int) -> list[int]:
  """Up to k of a group's negative rows in one language, rotated by epoch."""
  if not k:
    return []
  rows = np.asarray(index.negative_rows[index.negative_offsets[group]:
                                        index.negative_offsets[group + 1]])
  if not len(rows):
    return []
  take = (int(epoch) * k + np.arange(min(k, len(rows)))) % len(rows)
  return [int(r) for r in rows[take]]


def batch_fingerprint(batch: Mapping[str, Any]) -> int:
  """A 32-bit checksum of a global batch: its examples (source, groups, languages), the text rows
  they read and the digest of the store's bytes. Logged per step so that two runs can be checked
  to have trained on the same data, whatever their topology; runs that read other bytes (another
  or a damaged store) log other fingerprints."""
  return zlib.crc32(json.dumps([batch['source'], np.asarray(batch['group']).tolist(),
                                list(batch['query_lang']), list(batch['passage_lang']),
                                batch.get('rows'), batch.get('content')]).encode())


def batch_rows(batch: Mapping[str, Any], rows: slice) -> dict[str, Any]:
  """Rows `rows` of a global batch: its per-example fields cut, its per-batch fields (step,
  type, source, ...) as they are. Which rows a host takes is `sharding.host_rows`' rule (the
  input pipeline's use); the hosts' parts in process order make up the global batch."""
  return {key: (v[rows] if key in ('query_lang', 'passage_lang', 'group', 'epoch') else v)
          for key, v in batch.items()}
