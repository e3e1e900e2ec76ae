"""Hybrid-batch input pipeline: stores -> global batch indices -> this host's texts -> tokens.

Shape (docs/design.md, "The data flow"):
  each source's prepared store (`hybrid_ir.data.open_store`; prepared on first use when
  `input.prepare` is 'auto')
  -> `sampler.Sampler`: the global batch of step s (type, source, languages, groups), the same
     on every host
  -> `sampler.batch_rows` at `sharding.host_rows`: this host's share
  -> a tf.data map, in parallel: read the slice's texts from the store by random access and
     tokenize them (`tokenize_fn`), then prefetch.

Memory per host is the stores' integer indexes (memory-mapped when local), never a Python
object per record; start-up and resume cost O(1) in the data size and in the step.

Batches are consumed through prefetch, so `Pipeline.get_state()` returns the state after the
last batch the caller received, not after what tf.data has produced ahead.

Hard negatives: `num_negatives` is set per source. Every batch carries K = the largest
`num_negatives` of any source negatives per example (so every step has one shape); where a
source has fewer (QA pairs with none, a query with fewer), the slots hold a placeholder text
and `negative_valid` is False, and the loss leaves them out. Example e of a stream in epoch
`epoch` takes its negatives e*K, e*K+1, ... (mod the group's count), so epochs see different
negatives. They are passages of the example's passage language; a source with
`negative_langs: 'query+passage'` gives an X->Y example half of them in X (`sampler.example_rows`).
"""
import atexit
import json
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from absl import logging
import jax
import numpy as np
import tensorflow as tf

from hybrid_ir import data as data_lib
from hybrid_ir import sampler as sampler_lib
from hybrid_ir import sharding
from hybrid_ir.data import store as store_lib

TokenizeFn = Callable[[list[str], str], dict[str, np.ndarray]]
# Fills the negative slots a source cannot fill; never scored (negative_valid is False).
PLACEHOLDER = 'none'

# tf.data's generator iterators call back into Python when destroyed; left to interpreter
# shutdown that can deadlock (seen here ~1 run in 4), so live pipelines are closed at exit.
_LIVE_PIPELINES = weakref.WeakSet()


@atexit.register
def _close_live_pipelines() -> None:
  for pipeline in list(_LIVE_PIPELINES):
    pipeline.close()


def open_sources(config: Any, *, workers: int | None = None) -> dict[str, sampler_lib.Source]:
  """The sources of `config.input` (their stores opened or prepared), by name.

  Reads `sources` (each: `name`, `kind`, kind fields, optional `langs`, `num_negatives`,
  `store`), `store_dir`, `prepare` ('auto' | 'never') and `languages` (None: all).
  """
  if 'num_negatives' in config:
    raise ValueError('input.num_negatives was replaced by a num_negatives per source '
                     '(input.sources[i].num_negatives): QA pairs have none, mMARCO has them')
  out, offset = {}, 0
  for cfg in config.get('sources') or ():
    name = cfg.get('name')
    if not name or name in out:
      raise ValueError(f'input.sources: names must be unique and non-empty, got {name!r}')
    store = data_lib.open_store(cfg, config.get('store_dir'),
                                prepare=config.get('prepare', 'auto'), workers=workers)
    out[name] = sampler_lib.make_source(name, store, cfg, offset, config.get('languages'))
    offset += store.num_groups
  if not out:
    raise ValueError('input.sources is empty')
  if offset >= 2**31:
    raise ValueError(f'input: {offset} groups in all do not fit int32 example ids')
  return out


def read_slice(source: sampler_lib.Source, local: Mapping[str, Any], num_negatives: int
               ) -> dict[str, Any]:
  """The texts and identities of a host slice of a batch of `source`.

  Returns query_text [L], passage_text [L], negative_text [L*K] (example-major), identity
  [L] int32 (passage identity of each positive), negative_identity [L*K] int32 and
  negative_valid [L*K] bool, with K = num_negatives slots per example, of which the first
  min(source.num_negatives, the group's count) are filled.
  """
  store = source.store
  n = len(local['group'])
  k = num_negatives
  use = min(k, source.num_negatives)
  reads = {}  # lang -> rows to read, in order
  plan = []
  neg_ident = np.full(n * k, -1, np.int32)
  neg_valid = np.zeros(n * k, bool)
  for i, (q, p, g, e) in enumerate(zip(local['query_lang'], local['passage_lang'],
                                       local['group'], local['epoch'])):
    q_row, p_row, take = sampler_lib.example_rows(source, q, p, int(g), int(e), use)
    plan.append((q, len(reads.setdefault(q, []))))
    reads[q].append(q_row)
    plan.append((p, len(reads.setdefault(p, []))))
    reads[p].append(p_row)
    for j, (lang, r) in enumerate(take):
      plan.append((lang, len(reads.setdefault(lang, []))))
      reads[lang].append(r)
      neg_ident[i * k + j] = store.index(lang).row_identity[r]
      neg_valid[i * k + j] = True
  texts = {l: store.texts(l, rows) for l, rows in reads.items()}
  it = iter(plan)
  out = {'query_text': [], 'passage_text': [], 'negative_text': [PLACEHOLDER] * (n * k)}
  for i in range(n):
    for field in ('query_text', 'passage_text'):
      l, j = next(it)
      out[field].append(texts[l][j])
    for j in range(k):
      if neg_valid[i * k + j]:
        l, r = next(it)
        out['negative_text'][i * k + j] = texts[l][r]
  out['identity'] = source.group_identity[np.asarray(local['group'], np.int64)].astype(np.int32)
  out['negative_identity'], out['negative_valid'] = neg_ident, neg_valid
  return out


class Pipeline:
  """Iterator of tokenized host-local hybrid batches, with exact save / restore.

  Inputs:
    sources: name -> `sampler.Source` (see `open_sources`).
    config: the input config: `batch_size` (global), `seed`, `too_few`, `prefetch` (batches,
      2), and the schedule fields (see `sampler.Sampler`, `schedule.make_spec`).
    tokenize_fn: `fn(texts, kind) -> dict[str, np.ndarray]`, kind 'query' or 'passage' (the
      encoder's `tokenize`, which adds the prefix and pads to a length bucket). Negatives
      are tokenized as passages.
    process_index / process_count: this host (default: jax.process_index / process_count).
    state: a `get_state()` dict to resume from (saved by any host, on any topology).
  Yields dicts: 'step' int, 'batch_type' str, 'source' str, 'fingerprint' int (of the whole
  global batch's examples, the same on every host: `sampler.batch_fingerprint`), 'group' int32
  [L] (example ids,
  unique across sources), 'identity' int32 [L] (passage identity of each positive),
  'query_lang' / 'passage_lang' str arrays [L], token dicts 'query' and 'passage' [L, ...],
  and, when any source has negatives, 'negative' [L*K, ...] (example-major),
  'negative_identity' int32 [L*K] and 'negative_valid' bool [L*K]. L = batch_size /
  process_count.
  Recommended for: train.py; the global batch is the concatenation of the hosts' batches in
  process order (`jax.make_array_from_process_local_data`).
  """

  def __init__(self, sources: Mapping[str, sampler_lib.Source], config: Any,
               tokenize_fn: TokenizeFn, *, process_index: int | None = None,
               process_count: int | None = None, state: Mapping[str, Any] | None = None):
    if process_index is None or process_count is None:
      process_index, process_count = jax.process_index(), jax.process_count()
    self.sampler = sampler_lib.Sampler(sources, config)
    if self.sampler.batch_size % process_count:
      raise ValueError(f'input: batch_size {self.sampler.batch_size} must be a multiple of the '
                       f'process count {process_count}')
    # This host's rows of every global batch.
    self.rows = sharding.host_rows(self.sampler.batch_size, process_index, process_count)
    if state is not None:
      self.sampler.set_state(state)
    self.process_index, self.process_count = process_index, process_count
    self.local_batch_size = self.sampler.batch_size // process_count
    self.num_negatives = max(s.num_negatives for s in sources.values())
    self._state = self.sampler.get_state()
    self._tokenize_fn = tokenize_fn
    self._store_failures: list[store_lib.StoreError] = []
    self._iterator = self._make_dataset(int(config.get('prefetch', 2))).as_numpy_iterator()
    _LIVE_PIPELINES.add(self)

  def _make_dataset(self, prefetch: int) -> tf.data.Dataset:
    local, k, rows = self.local_batch_size, self.num_negatives, self.rows
    # What the dataset's Python functions use, reached only through this dict: TensorFlow keeps
    # those functions registered after the dataset is gone, so `close` empties it, and a closed
    # pipeline holds no sampler, stores or tokenizer (a process that trains run after run, such
    # as the experiment runner, would otherwise keep every run's model and texts).
    live = self._live = {'sampler': self.sampler, 'sources': self.sampler.sources,
                         'tokenize': self._tokenize_fn}

    def generate():
      while live:
        sampler = live['sampler']
        glob = sampler.next_batch()
        batch = sampler_lib.batch_rows(glob, rows)
        yield {'step': batch['step'], 'batch_type': batch['batch_type'],
               'fingerprint': sampler_lib.batch_fingerprint(glob),
               'source': batch['source'], 'query_lang': np.array(batch['query_lang']),
               'passage_lang': np.array(batch['passage_lang']), 'group': batch['group'],
               'epoch': batch['epoch'], 'state': json.dumps(sampler.get_state())}

    strings = {f: tf.TensorSpec([], tf.string) for f in ('batch_type', 'source', 'state')}
    signature = {'step': tf.TensorSpec([], tf.int64), 'fingerprint': tf.TensorSpec([], tf.int64),
                 'query_lang': tf.TensorSpec([local], tf.string),
                 'passage_lang': tf.TensorSpec([local], tf.string),
                 'group': tf.TensorSpec([local], tf.int64),
                 'epoch': tf.TensorSpec([local], tf.int64), **strings}
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)

    # The token fields' names and dtypes come from the tokenizer itself, probed with as many
    # texts as it will get (a GradCache-packing tokenizer takes no fewer than its chunks).
    kinds = [('query', 'query_text', 'query', local), ('passage', 'passage_text', 'passage', local)]
    if k:
      kinds.append(('negative', 'negative_text', 'passage', local * k))
    probes = {name: self._tokenize_fn(['probe'] * n, kind) for name, _, kind, n in kinds}
    layout = [(name, key, tf.as_dtype(v.dtype)) for name, *_ in kinds
              for key, v in sorted(probes[name].items())]
    extra = [('group', tf.int32, local), ('identity', tf.int32, local)]
    if k:
      extra += [('negative_identity', tf.int32, local * k), ('negative_valid', tf.bool, local * k)]
    failures = self._store_failures

    def read_and_tokenize(source, q_lang, p_lang, group, epoch):
      if not live:
        raise RuntimeError('the input pipeline was closed')
      try:
        src, tokenize_fn = live['sources'][source.decode('utf-8')], live['tokenize']
        texts = read_slice(src, {'query_lang': [l.decode() for l in q_lang],
                                 'passage_lang': [l.decode() for l in p_lang],
                                 'group': group, 'epoch': epoch}, k)
        out = []
        for name, field, kind, _ in kinds:
          tokens = tokenize_fn(texts[field], kind)
          out.extend(tokens[key] for n, key, _ in layout if n == name)
        # Example ids unique across sources: the group index plus its source's offset.
        texts['group'] = (np.asarray(group) + src.offset).astype(np.int32)
        return out + [texts[name] for name, _, _ in extra]
      except Exception as e:
        # tf.data reports only the exception type from here; keep the traceback.
        logging.exception('input: reading or tokenizing a batch of %s failed', source)
        if isinstance(e, store_lib.StoreError):
          failures.append(e)  # raised as it is by __next__, not inside tf.data's message
        raise

    def read(element):
      outs = tf.numpy_function(
          read_and_tokenize, [element['source'], element['query_lang'], element['passage_lang'],
                              element['group'], element['epoch']],
          [d for *_, d in layout] + [d for _, d, _ in extra], stateful=False)
      rows = {name: n for name, _, _, n in kinds}
      for (name, key, _), t in zip(layout, outs):
        # A packed batch's token arrays have as many rows as its texts need, not one per text.
        per_text = 'example' not in probes[name] or key in ('example_start', 'example_length')
        t.set_shape([rows[name] if per_text else None] + [None] * (probes[name][key].ndim - 1))
        element.setdefault(name, {})[key] = t
      for (name, _, n), t in zip(extra, outs[len(layout):]):
        t.set_shape([n])
        element[name] = t
      del element['epoch']
      return element

    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(prefetch)

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    try:
      batch = next(self._iterator)
    except tf.errors.OpError:
      if self._store_failures:  # a damaged store: its one-line message, not tf.data's
        raise self._store_failures[0] from None
      raise
    self._state = json.loads(batch.pop('state'))
    for key in ('batch_type', 'source'):
      batch[key] = batch[key].decode('utf-8')
    for key in ('query_lang', 'passage_lang'):
      batch[key] = np.array([s.decode('utf-8') for s in batch[key]])
    batch['step'] = int(batch['step'])
    batch['fingerprint'] = int(batch['fingerprint'])
    return batch

  def close(self) -> None:
    """Stops the background tf.data work and lets go of the sampler, stores and tokenizer; the
    pipeline yields no more batches."""
    self._iterator = None
    self._live.clear()
    _LIVE_PIPELINES.discard(self)

  def get_state(self) -> dict[str, Any]:
    """State after the last batch returned (JSON-able; save it with the checkpoint)."""
    return dict(self._state)


def make_pipeline(config: Any, tokenize_fn: TokenizeFn, *,
                  state: Mapping[str, Any] | None = None, **kwargs) -> Pipeline:
  """`Pipeline(open_sources(config), config, tokenize_fn, state=state)`."""
  return Pipeline(open_sources(config), config, tokenize_fn, state=state, **kwargs)
