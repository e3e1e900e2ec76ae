"""Hybrid-batch input pipeline: records -> per-language-pair streams -> tokenized host batches.

Shape (DESIGN.md "data flow"):
  records of each source, grouped by group_id (the translations of one item)
  -> one stream per (source, query_lang, passage_lang): the groups that have both languages,
     this host's shard of them, reshuffled every epoch with (seed, stream, epoch)
  -> `schedule.batch_plan(seed, step)` says which streams fill the slots of global batch `step`
  -> this host fills its slice of the slots and tokenizes (tf.data map + prefetch).

Why it is exact and cheap to resume: a stream is a deterministic sequence (epoch permutations
are regenerated from the seed), so its position is one integer. The state is the next step
plus one integer per stream, a small JSON-able dict; restoring it rebuilds the same
iterator. Batches are consumed through prefetch, so `Pipeline.get_state()` returns the state
after the last batch the caller received, not after what tf.data has produced ahead.

Distinct groups per batch: hosts own disjoint group shards (group index % process_count), and
within a host a draw whose group is already in the batch is skipped (the stream moves on; the
group is not lost, it was used in this batch in another language pair, and it comes back next
epoch of that stream). So every example of a global batch comes from a distinct group and
in-batch negatives are true negatives; batches carry `group` ids anyway so the loss can mask.

Too few groups: every stream must hold at least `batch_size / process_count` groups on every
host, or some batch could not be filled with distinct groups. A pair below that is dropped with
a warning (`too_few='drop'`, the default) or raises (`too_few='error'`); a source left with no
pairs raises. Mono batches need (X, X) streams, cross batches X != Y ones.

Records with several entries for one (group, lang), such as mMARCO triples of one query with
different negatives: epoch e of a stream uses entry e % n.
"""
import atexit
import collections
import dataclasses
import json
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf

from hybrid_ir import schedule as schedule_lib
from hybrid_ir.data import records as records_lib

Record = records_lib.Record
TokenizeFn = Callable[[list[str], str], dict[str, np.ndarray]]
STATE_VERSION = 1

# tf.data's generator iterators call back into Python when destroyed; left to interpreter
# shutdown that can deadlock (seen here ~1 run in 4), so live pipelines are closed at exit.
_LIVE_PIPELINES = weakref.WeakSet()


@atexit.register
def _close_live_pipelines() -> None:
  for pipeline in list(_LIVE_PIPELINES):
    pipeline.close()


def _get(config: Any, key: str, default: Any) -> Any:
  if isinstance(config, Mapping):
    return config.get(key, default)
  return getattr(config, key) if key in config else default


def _crc(*parts: Any) -> int:
  return zlib.crc32('|'.join(map(str, parts)).encode('utf-8'))


@dataclasses.dataclass
class _Stream:
  """The groups of one (source, query_lang, passage_lang) on this host, in epoch order."""
  key: str
  groups: np.ndarray  # this host's eligible group indices, sorted
  seed: int
  _epoch: int = -1
  _perm: np.ndarray | None = None

  def at(self, position: int) -> tuple[int, int]:
    """(group index, epoch) of the draw at `position` (0-based, counting every draw)."""
    epoch, i = divmod(position, len(self.groups))
    if epoch != self._epoch:
      rng = np.random.default_rng([self.seed, _crc(self.key), epoch])
      self._perm, self._epoch = rng.permutation(self.groups), epoch
    return int(self._perm[i]), epoch


@dataclasses.dataclass
class _Source:
  name: str
  group_ids: list[str]  # sorted; a group's index is its position here
  offset: int  # added to group indices so `group` ids are unique across sources
  entries: dict[str, dict[int, list[Record]]]  # lang -> group index -> records


class Sampler:
  """Deterministic host-local batch *texts* from the schedule; no tokenization, no threads.

  Inputs: records per source name; the input config (see `Pipeline`); this host's
  process_index / process_count. Recommended for: inspecting what the pipeline feeds
  (tests, analysis); training uses `Pipeline`, which wraps it.
  """

  def __init__(self, records: Mapping[str, Sequence[Record]], config: Any, *,
               process_index: int = 0, process_count: int = 1):
    if not 0 <= process_index < process_count:
      raise ValueError(f'process_index {process_index} not in [0, {process_count})')
    batch_size = int(_get(config, 'batch_size', 0))
    if batch_size <= 0 or batch_size % process_count:
      raise ValueError(f'input: batch_size {batch_size} must be a positive multiple of '
                       f'process_count {process_count}')
    self.seed = int(_get(config, 'seed', 0))
    self.local_batch_size = batch_size // process_count
    self.num_negatives = int(_get(config, 'num_negatives', 0))
    self.process_index, self.process_count = process_index, process_count
    too_few = _get(config, 'too_few', 'drop')
    if too_few not in ('drop', 'error'):
      raise ValueError(f"input: too_few must be 'drop' or 'error', got {too_few!r}")
    if not records:
      raise ValueError('input: no sources')
    available = sorted({r['lang'] for recs in records.values() for r in recs})
    langs = _get(config, 'languages', None)
    langs = list(langs) if langs else available
    unknown = [l for l in langs if l not in available]
    if unknown:
      raise ValueError(f'input: languages {unknown} are in no source; available: {available}')

    self.sources: dict[str, _Source] = {}
    self.streams: dict[str, _Stream] = {}
    self._global_sizes: dict[str, int] = {}  # stream -> groups on all hosts (fingerprint)
    specs = []
    offset = 0
    for name, recs in records.items():
      source, spec = self._build_source(name, recs, set(langs), offset, too_few)
      offset += len(source.group_ids)
      self.sources[name] = source
      specs.append(spec)
    if offset >= 2**31:
      raise ValueError(f'input: {offset} groups in all do not fit int32 group ids')
    self.spec = schedule_lib.make_spec(config, specs)
    self.step = 0
    self.positions = {k: 0 for k in self.streams}
    self.collision_skips = 0
    # Identical on every host: states saved by one host can be checked on another.
    self.fingerprint = _crc(json.dumps(dataclasses.asdict(self.spec), sort_keys=True),
                            self.seed, self.num_negatives, self.process_count,
                            sorted(self._global_sizes.items()))

  def _build_source(self, name, recs, langs, offset, too_few):
    recs = [r for r in recs if r['lang'] in langs]
    if not recs:
      raise ValueError(f'input: source {name!r} has no records in languages {sorted(langs)}')
    group_ids = sorted({r['group_id'] for r in recs})
    index = {g: i for i, g in enumerate(group_ids)}
    entries = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in recs:
      if len(r['negatives']) < self.num_negatives:
        raise ValueError(f'input: source {name!r}: group {r["group_id"]!r} lang {r["lang"]!r} '
                         f'has {len(r["negatives"])} negatives, num_negatives is '
                         f'{self.num_negatives}')
      entries[r['lang']][index[r['group_id']]].append(r)
    src_langs = sorted(entries)
    pairs, dropped = [], []
    for q in src_langs:
      for p in src_langs:
        eligible = np.array(sorted(entries[q].keys() & entries[p].keys()), np.int64)
        # Every host must be able to fill its slice from this stream with distinct groups.
        per_host = np.bincount(eligible % self.process_count, minlength=self.process_count)
        if per_host.min() < self.local_batch_size:
          dropped.append(((q, p), len(eligible), int(per_host.min())))
          continue
        pairs.append((q, p))
        key = f'{name}|{q}|{p}'
        self._global_sizes[key] = len(eligible)
        mine = eligible[eligible % self.process_count == self.process_index]
        self.streams[key] = _Stream(key, mine, self.seed)
    if dropped:
      msg = (f'input: source {name!r}: language pairs with too few groups for a host batch of '
             f'{self.local_batch_size} (pair, groups, fewest on a host): {dropped}')
      if too_few == 'error' or not pairs:
        raise ValueError(msg + ('' if pairs else '; no pair left'))
      logging.warning('%s; dropped (too_few=drop)', msg)
    counts = records_lib.count_by_lang(recs)
    logging.info('input: source %s: %d groups, records per language %s, %d language pairs',
                 name, len(group_ids), counts, len(pairs))
    spec = schedule_lib.SourceSpec(name=name, size=len(recs),
                                   lang_sizes=tuple(sorted(counts.items())), pairs=tuple(pairs))
    return _Source(name, group_ids, offset, {l: dict(e) for l, e in entries.items()}), spec

  # --- state ---

  def get_state(self) -> dict[str, Any]:
    """The position before the next batch: a small JSON-able dict.

    'positions' are this host's stream positions; 'step' alone determines them (see
    `set_state`), so a state saved by any one host restores every host.
    """
    return {'version': STATE_VERSION, 'step': self.step, 'positions': dict(self.positions),
            'collision_skips': self.collision_skips, 'process_index': self.process_index,
            'process_count': self.process_count, 'fingerprint': self.fingerprint}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a `get_state()` dict; raises if the data or config changed.

    A state saved by this host restores in O(1). One saved by another host of the same job
    (e.g. a checkpoint written by process 0 only) is replayed: stream positions are a pure
    function of (data, config, seed, step), so this host re-draws steps [0, step) without
    building any text (~0.1 ms per step of 32 examples; see benchmarks/bench_pipeline.py).
    """
    if state.get('version') != STATE_VERSION:
      raise ValueError(f'input state: version {state.get("version")!r}, expected {STATE_VERSION}')
    for k in ('process_count', 'fingerprint'):
      if state.get(k) != getattr(self, k):
        raise ValueError(f'input state: {k} is {state.get(k)!r} but this pipeline has '
                         f'{getattr(self, k)!r} (data or config changed since it was saved)')
    step = int(state['step'])
    if state.get('process_index') == self.process_index:
      if set(state['positions']) != set(self.streams):
        raise ValueError("input state: stream names differ from this pipeline's")
      self.step = step
      self.positions = {k: int(v) for k, v in state['positions'].items()}
      self.collision_skips = int(state['collision_skips'])
      return
    logging.info('input: state saved by process %s; replaying %d steps for process %d',
                 state.get('process_index'), step, self.process_index)
    self.step, self.positions, self.collision_skips = 0, {k: 0 for k in self.streams}, 0
    while self.step < step:
      self._draw(schedule_lib.batch_plan(self.spec, self.seed, self.step))
      self.step += 1

  # --- batches ---

  def _draw(self, plan: schedule_lib.BatchPlan) -> list[tuple[str, str, int, int]]:
    """Advances the streams for this host's slots: [(q_lang, p_lang, group, epoch)]."""
    lo = self.process_index * self.local_batch_size
    used: set[int] = set()
    out = []
    for q, p in zip(plan.query_langs[lo:lo + self.local_batch_size],
                    plan.passage_langs[lo:lo + self.local_batch_size]):
      key = f'{plan.source}|{q}|{p}'
      stream = self.streams[key]
      # Terminates: the stream has >= local_batch_size groups and < that many are used, and
      # any 2 * len(groups) consecutive draws contain a whole epoch.
      for _ in range(2 * len(stream.groups) + 1):
        group, epoch = stream.at(self.positions[key])
        self.positions[key] += 1
        if group not in used:
          break
        self.collision_skips += 1
      else:
        raise RuntimeError(f'input: no unused group in stream {key} (a bug)')
      used.add(group)
      out.append((q, p, group, epoch))
    return out

  def next_texts(self) -> dict[str, Any]:
    """The next host-local batch as texts (see `Pipeline` for the fields)."""
    plan = schedule_lib.batch_plan(self.spec, self.seed, self.step)
    source = self.sources[plan.source]
    out = collections.defaultdict(list)
    for q, p, group, epoch in self._draw(plan):
      q_recs, p_recs = source.entries[q][group], source.entries[p][group]
      passage_rec = p_recs[epoch % len(p_recs)]
      out['query_text'].append(q_recs[epoch % len(q_recs)]['query'])
      out['passage_text'].append(passage_rec['positive'])
      out['negative_text'].extend(passage_rec['negatives'][:self.num_negatives])
      out['group'].append(source.offset + group)
      out['query_lang'].append(q)
      out['passage_lang'].append(p)
    self.step += 1
    return {'step': plan.step, 'batch_type': plan.batch_type, 'source': plan.source,
            'group': np.asarray(out['group'], np.int32),
            **{k: np.asarray(out[k], dtype=object) for k in
               ('query_lang', 'passage_lang', 'query_text', 'passage_text', 'negative_text')}}


class Pipeline:
  """Iterator of tokenized host-local hybrid batches, with exact save / restore.

  Inputs:
    records: source name -> training records (see `load_sources`).
    config: ConfigDict / mapping: `batch_size` (global), `seed`, `languages` (None: all),
      `num_negatives` (hard negatives per example, from the passage-language record; 0),
      `too_few` ('drop' | 'error'), `prefetch` (batches, 2), and the schedule fields
      (`type_probs`, `source_temperature`, `mono_lang_sampling`, `lang_temperature`,
      `cross_pairs`; see `schedule.make_spec`).
    tokenize_fn: `fn(texts, kind) -> dict[str, np.ndarray]`, kind 'query' or 'passage' (the
      encoder's `tokenize`, which adds the prefix and pads to a length bucket). Negatives
      are tokenized as passages.
    process_index / process_count: this host (default: jax.process_index / process_count).
    state: a `get_state()` dict to resume from.
  Yields dicts: 'step' int, 'batch_type' str, 'source' str, 'group' int32 [L] (equal ids =
  translations of one item), 'query_lang' / 'passage_lang' str arrays [L], and the token
  dicts 'query', 'passage' and (num_negatives > 0) 'negative' [L * num_negatives, ...],
  example-major. L = batch_size / process_count.
  Recommended for: train.py; the global batch is the concatenation of the hosts' batches in
  process order (`jax.make_array_from_process_local_data`).
  """

  def __init__(self, records: Mapping[str, Sequence[Record]], config: Any,
               tokenize_fn: TokenizeFn, *, process_index: int | None = None,
               process_count: int | None = None, state: Mapping[str, Any] | None = None):
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index, process_count = jax.process_index(), jax.process_count()
    self.sampler = Sampler(records, config, process_index=process_index,
                           process_count=process_count)
    if state is not None:
      self.sampler.set_state(state)
    self._state = self.sampler.get_state()
    self._tokenize_fn = tokenize_fn
    self._num_negatives = self.sampler.num_negatives
    self._iterator = self._make_dataset(int(_get(config, 'prefetch', 2))).as_numpy_iterator()
    _LIVE_PIPELINES.add(self)

  def _make_dataset(self, prefetch: int) -> tf.data.Dataset:
    sampler = self.sampler
    local = sampler.local_batch_size

    def generate():
      while True:
        texts = sampler.next_texts()
        texts['state'] = json.dumps(sampler.get_state())
        yield texts

    strings = {k: tf.TensorSpec([], tf.string) for k in ('batch_type', 'source', 'state')}
    vectors = {k: tf.TensorSpec([local], tf.string)
               for k in ('query_lang', 'passage_lang', 'query_text', 'passage_text')}
    signature = {'step': tf.TensorSpec([], tf.int64), 'group': tf.TensorSpec([local], tf.int32),
                 'negative_text': tf.TensorSpec([local * self._num_negatives], tf.string),
                 **strings, **vectors}
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)

    # The token fields' names and dtypes come from the tokenizer itself.
    kinds = [('query', 'query_text', 'query'), ('passage', 'passage_text', 'passage')]
    if self._num_negatives:
      kinds.append(('negative', 'negative_text', 'passage'))
    probes = {name: self._tokenize_fn(['probe'], kind) for name, _, kind in kinds}
    layout = [(name, field, kind, k, tf.as_dtype(v.dtype))
              for name, field, kind in kinds for k, v in sorted(probes[name].items())]
    tokenize_fn = self._tokenize_fn

    def tokenize_np(*texts):
      out = []
      for (name, _, kind), t in zip(kinds, texts):
        try:
          tokens = tokenize_fn([s.decode('utf-8') for s in t], kind)
        except Exception:
          # tf.data reports only the exception type from here; keep the traceback.
          logging.exception('input: tokenize_fn failed on a %s batch', kind)
          raise
        out.extend(tokens[k] for n, _, _, k, _ in layout if n == name)
      return out

    def tokenize(element):
      texts = [element.pop(field) for _, field, _ in kinds]
      if not self._num_negatives:
        element.pop('negative_text')
      outs = tf.numpy_function(tokenize_np, texts, [d for *_, d in layout], stateful=False)
      for (name, _, _, k, _), t in zip(layout, outs):
        rows = local * (self._num_negatives if name == 'negative' else 1)
        t.set_shape([rows] + [None] * (probes[name][k].ndim - 1))
        element.setdefault(name, {})[k] = t
      return element

    ds = ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(prefetch)

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    batch = next(self._iterator)
    self._state = json.loads(batch.pop('state'))
    for k in ('batch_type', 'source'):
      batch[k] = batch[k].decode('utf-8')
    for k in ('query_lang', 'passage_lang'):
      batch[k] = np.array([s.decode('utf-8') for s in batch[k]])
    batch['step'] = int(batch['step'])
    return batch

  def close(self) -> None:
    """Stops the background tf.data work; the pipeline yields no more batches."""
    self._iterator = None
    _LIVE_PIPELINES.discard(self)

  def get_state(self) -> dict[str, Any]:
    """State after the last batch returned (JSON-able; save it with the checkpoint)."""
    return dict(self._state)


def load_sources(source_configs: Sequence[Any]) -> dict[str, list[Record]]:
  """Reads the configured training sources: name -> records.

  Each source config has `name`, `kind` and kind-specific fields:
    'squad' (LAReQA / SQuAD-format, `hybrid_ir.data.squad.load_squad`): `path` (directory of
      <lang>.json) or `files` ({lang: path}); optional `langs`, `split`, `num_folds`, `fold`,
      `split_seed`.
    'triples' (mMARCO-style TSV, `hybrid_ir.data.triples.load_triples`): `files` ({lang: path}).
    'jsonl' (`hybrid_ir.data.jsonl.load_jsonl`): `paths` (list of files).
  """
  out = {}
  for cfg in source_configs:
    name, kind = _get(cfg, 'name', None), _get(cfg, 'kind', None)
    if not name or name in out:
      raise ValueError(f'input: source names must be unique and non-empty, got {name!r}')
    if kind == 'squad':
      from hybrid_ir.data import squad  # pylint: disable=g-import-not-at-top
      out[name] = squad.load_squad(
          _get(cfg, 'files', None) or _get(cfg, 'path', None), _get(cfg, 'langs', None),
          split=_get(cfg, 'split', 'all'), num_folds=_get(cfg, 'num_folds', 5),
          fold=_get(cfg, 'fold', 0), seed=_get(cfg, 'split_seed', 0), name=name)
    elif kind == 'triples':
      from hybrid_ir.data import triples  # pylint: disable=g-import-not-at-top
      out[name] = triples.load_triples(_get(cfg, 'files', None), name=name)
    elif kind == 'jsonl':
      from hybrid_ir.data import jsonl  # pylint: disable=g-import-not-at-top
      out[name] = jsonl.load_jsonl(_get(cfg, 'paths', None), name=name)
    else:
      raise ValueError(f"input: source {name!r}: kind must be 'squad', 'triples' or 'jsonl', "
                       f'got {kind!r}')
  return out


def make_pipeline(config: Any, tokenize_fn: TokenizeFn, *,
                  state: Mapping[str, Any] | None = None, **kwargs) -> Pipeline:
  """`Pipeline(load_sources(config.sources), config, tokenize_fn, state=state)`."""
  return Pipeline(load_sources(_get(config, 'sources', ())), config, tokenize_fn, state=state,
                  **kwargs)
