"""The hybrid-batch schedule: which batch type, source and languages come at step s.

`batch_plan(spec, seed, step)` is a pure function: it builds a fresh counter-based
generator from (seed, step), so step s costs O(batch) whatever s is, every host computes the
same plan with no communication, and resuming at step k needs no schedule state at all.

Batch types (the paper, arXiv 2408.10536, section 3):
  'mono'  X-X-mono: one language for the whole batch; every slot is (X, X).
  'cross' X-Y: every slot has query language != passage language; the pair is drawn per slot
          (the paper, after LAReQA's X-Y) or once per batch (`cross_pairs='per_batch'`).
  'mixed' per slot any (query, passage) pair, same-language included (LAReQA's X-X style);
          a third type beyond the paper.
The hybrid of the paper is `type_probs={'mono': 0.5, 'cross': 0.5, 'mixed': 0.0}`.

The batch type is drawn first; then the source dataset, once per batch, among the sources
that can make that type (an English-only source makes no cross batches), in proportion to
size**(1/T) with T = `source_temperature` (size = number of records; T=1: proportional to
size, the paper's "sampled based on dataset size"; T -> inf: uniform). One source per batch
keeps in-batch negatives on one corpus and lets a mono batch use any language its source has;
`BatchPlan.source` names it.
"""
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

BATCH_TYPES = ('mono', 'cross', 'mixed')


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """What the schedule needs to know about one training source.

  Attributes:
    name: source name (unique).
    size: number of records in the source; weights the source draw.
    lang_sizes: language -> number of records in this language; weights the mono
      language draw when `mono_lang_sampling='size'`.
    pairs: allowed (query_lang, passage_lang) pairs, same-language pairs included; the
      input pipeline removes pairs with too few groups to fill a batch. Mono batches use
      the (X, X) pairs, cross batches the X != Y pairs, mixed batches all of them.
  """
  name: str
  size: int
  lang_sizes: tuple[tuple[str, int], ...]
  pairs: tuple[tuple[str, str], ...]

  @property
  def mono_langs(self) -> tuple[str, ...]:
    return tuple(q for q, p in self.pairs if q == p)

  @property
  def cross_pairs(self) -> tuple[tuple[str, str], ...]:
    return tuple((q, p) for q, p in self.pairs if q != p)


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
  """Static schedule configuration (see `make_spec`)."""
  batch_size: int
  sources: tuple[SourceSpec, ...]
  type_probs: tuple[float, float, float]  # in BATCH_TYPES order
  source_temperature: float = 1.0
  mono_lang_sampling: str = 'uniform'  # 'uniform' | 'size'
  lang_temperature: float = 1.0
  cross_pairs: str = 'per_example'  # 'per_example' | 'per_batch'


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """The plan of one global batch: type, source, and per slot (query_lang, passage_lang)."""
  step: int
  batch_type: str
  source: str
  query_langs: tuple[str, ...]
  passage_langs: tuple[str, ...]


def make_spec(config: Any, sources: Sequence[SourceSpec]) -> ScheduleSpec:
  """Validates a schedule config and the sources into a `ScheduleSpec`.

  Inputs:
    config: ConfigDict or mapping with `batch_size` (global) and optionally
      `type_probs` (dict over 'mono'/'cross'/'mixed', default the paper's 0.5/0.5/0),
      `source_temperature` (1.0), `mono_lang_sampling` ('uniform' | 'size'),
      `lang_temperature` (1.0), `cross_pairs` ('per_example' | 'per_batch').
    sources: the training sources, usually built by the input pipeline from the records.
  Raises ValueError on a bad value, naming the field and the value.
  """
  batch_size = int(config.get('batch_size', 0) or 0)
  if batch_size <= 0:
    raise ValueError(f'schedule: batch_size must be > 0, got {batch_size}')
  raw_probs = dict(config.get('type_probs', None) or {'mono': 0.5, 'cross': 0.5, 'mixed': 0.0})
  unknown = set(raw_probs) - set(BATCH_TYPES)
  if unknown:
    raise ValueError(f'schedule: type_probs has unknown batch types {sorted(unknown)}; '
                     f'known: {list(BATCH_TYPES)}')
  probs = tuple(float(raw_probs.get(t, 0.0)) for t in BATCH_TYPES)
  if any(p < 0 for p in probs) or not np.isclose(sum(probs), 1.0):
    raise ValueError(f'schedule: type_probs must be >= 0 and sum to 1, got {raw_probs}')
  mono_sampling = _choice(config, 'mono_lang_sampling', ('uniform', 'size'))
  cross_pairs = _choice(config, 'cross_pairs', ('per_example', 'per_batch'))
  temps = {k: float(config.get(k, 1.0)) for k in ('source_temperature', 'lang_temperature')}
  for k, t in temps.items():
    if t <= 0:
      raise ValueError(f'schedule: {k} must be > 0, got {t}')
  if not sources:
    raise ValueError('schedule: no sources')
  names = [s.name for s in sources]
  if len(set(names)) != len(names):
    raise ValueError(f'schedule: duplicate source names {names}')
  for s in sources:
    if s.size <= 0 or not s.pairs:
      raise ValueError(f'schedule: source {s.name!r} has size {s.size} and pairs {list(s.pairs)}')
  for t, p in zip(BATCH_TYPES, probs):
    if p > 0 and not any(_usable(s, t) for s in sources):
      raise ValueError(f'schedule: no source has language pairs usable for {t!r} batches '
                       f'(type_probs[{t!r}]={p}); sources: '
                       f'{ {s.name: list(s.pairs) for s in sources} }')
  return ScheduleSpec(
      batch_size=batch_size, sources=tuple(sources), type_probs=probs,
      source_temperature=temps['source_temperature'], mono_lang_sampling=mono_sampling,
      lang_temperature=temps['lang_temperature'], cross_pairs=cross_pairs)


def _choice(config: Any, key: str, options: Sequence[str]) -> str:
  """config[key] (default: the first option); ValueError naming the key, the options and the
  value when it is not one of `options`."""
  value = str(config.get(key, options[0]))
  if value not in options:
    raise ValueError(f'schedule: {key} must be ' + ' or '.join(map(repr, options))
                     + f', got {value!r}')
  return value


def _usable(source: SourceSpec, batch_type: str) -> bool:
  return bool({'mono': source.mono_langs, 'cross': source.cross_pairs,
               'mixed': source.pairs}[batch_type])


def tempered(sizes: Sequence[float], temperature: float) -> np.ndarray:
  """Probabilities proportional to size**(1/temperature)."""
  w = np.asarray(sizes, dtype=np.float64) ** (1.0 / temperature)
  return w / w.sum()


def batch_plan(spec: ScheduleSpec, seed: int, step: int) -> BatchPlan:
  """The plan of global batch `step`: a pure function of (spec, seed, step).

  Inputs: a `ScheduleSpec` from `make_spec`, the run's seed, and the step (>= 0).
  Recommended for: the input pipeline (all hosts call it with the same arguments) and for
  analysing a run's batch mix offline. Related: `make_spec`, `input_pipeline.Pipeline`.
  """
  if step < 0:
    raise ValueError(f'batch_plan: step must be >= 0, got {step}')
  # Counter-based: a fresh generator per (seed, step) makes step s O(1) to reach.
  rng = np.random.default_rng([int(seed), int(step)])
  batch_type = BATCH_TYPES[rng.choice(len(BATCH_TYPES), p=np.asarray(spec.type_probs))]
  # Only sources that can make this batch type compete (an English-only source makes no
  # cross batches); among them the draw is by size.
  usable = [s for s in spec.sources if _usable(s, batch_type)]
  src_probs = tempered([s.size for s in usable], spec.source_temperature)
  source = usable[rng.choice(len(usable), p=src_probs)]
  n = spec.batch_size
  if batch_type == 'mono':
    langs = source.mono_langs
    if spec.mono_lang_sampling == 'uniform':
      p = None
    else:
      sizes = dict(source.lang_sizes)
      p = tempered([sizes[l] for l in langs], spec.lang_temperature)
    lang = langs[rng.choice(len(langs), p=p)]
    pairs = [(lang, lang)] * n
  elif batch_type == 'cross':
    cands = source.cross_pairs
    if spec.cross_pairs == 'per_batch':
      pairs = [cands[rng.integers(len(cands))]] * n
    else:
      pairs = [cands[i] for i in rng.integers(len(cands), size=n)]
  else:
    cands = source.pairs
    pairs = [cands[i] for i in rng.integers(len(cands), size=n)]
  return BatchPlan(step=int(step), batch_type=batch_type, source=source.name,
                   query_langs=tuple(q for q, _ in pairs),
                   passage_langs=tuple(p for _, p in pairs))
