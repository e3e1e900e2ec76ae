"""Tests for hybrid_ir.schedule: batch-type / language mixture, invariants, purity."""
import collections
import itertools

import numpy as np
import pytest

from hybrid_ir import schedule

LANGS = ('ar', 'de', 'en', 'zh')
ALL_PAIRS = tuple(itertools.product(LANGS, LANGS))
STEPS = 2000


def _source(name='a', size=100, langs=LANGS, lang_sizes=None, pairs=None):
  pairs = pairs if pairs is not None else tuple(itertools.product(langs, langs))
  lang_sizes = lang_sizes or {l: size for l in langs}
  return schedule.SourceSpec(name, size, tuple(sorted(lang_sizes.items())), tuple(pairs))


def _within(count, n, p, sigmas=5.0):
  """Binomial count within `sigmas` standard deviations of n*p."""
  return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1e-9


def _plans(spec, seed=0, steps=STEPS):
  return [schedule.batch_plan(spec, seed, s) for s in range(steps)]


def test_type_source_and_language_frequencies_match_config():
  probs = {'mono': 0.5, 'cross': 0.3, 'mixed': 0.2}
  sources = [_source('big', 300), _source('small', 100)]
  spec = schedule.make_spec({'batch_size': 8, 'type_probs': probs}, sources)
  plans = _plans(spec)
  types = collections.Counter(p.batch_type for p in plans)
  for t, p in probs.items():
    assert _within(types[t], STEPS, p), (t, types)
  srcs = collections.Counter(p.source for p in plans)
  assert _within(srcs['big'], STEPS, 0.75), srcs  # proportional to size at T=1
  mono = [p for p in plans if p.batch_type == 'mono']
  mono_langs = collections.Counter(p.query_langs[0] for p in mono)
  for l in LANGS:  # uniform over languages, once per batch
    assert _within(mono_langs[l], len(mono), 1 / len(LANGS)), mono_langs
  cross_slots = collections.Counter(pair for p in plans if p.batch_type == 'cross'
                                    for pair in zip(p.query_langs, p.passage_langs))
  n_cross = sum(cross_slots.values())
  cross_pairs = [(q, p) for q, p in ALL_PAIRS if q != p]
  assert set(cross_slots) == set(cross_pairs)
  for pair in cross_pairs:  # per-example pairs: slots are independent draws
    assert _within(cross_slots[pair], n_cross, 1 / len(cross_pairs)), (pair, cross_slots)


def test_temperature_and_size_weighted_languages():
  sizes = {'ar': 100, 'de': 400, 'en': 1600, 'zh': 900}
  sources = [_source('big', 900, lang_sizes=sizes), _source('small', 100)]
  spec = schedule.make_spec({'batch_size': 4, 'type_probs': {'mono': 1.0},
                             'source_temperature': 2.0, 'mono_lang_sampling': 'size',
                             'lang_temperature': 2.0}, sources)
  plans = _plans(spec)
  srcs = collections.Counter(p.source for p in plans)
  assert _within(srcs['big'], STEPS, 30 / 40), srcs  # sqrt(900) : sqrt(100)
  big = [p for p in plans if p.source == 'big']
  langs = collections.Counter(p.query_langs[0] for p in big)
  total = sum(np.sqrt(v) for v in sizes.values())
  for l, v in sizes.items():
    assert _within(langs[l], len(big), np.sqrt(v) / total), langs


def test_batch_invariants():
  spec = schedule.make_spec({'batch_size': 32, 'type_probs': {'mono': 0.4, 'cross': 0.4,
                                                               'mixed': 0.2}}, [_source()])
  mixed_pairs = set()
  for p in _plans(spec):
    assert len(p.query_langs) == len(p.passage_langs) == 32
    pairs = list(zip(p.query_langs, p.passage_langs))
    if p.batch_type == 'mono':
      assert len(set(p.query_langs) | set(p.passage_langs)) == 1
    elif p.batch_type == 'cross':
      assert all(q != d for q, d in pairs)
    else:
      mixed_pairs.update(pairs)
  assert mixed_pairs == set(ALL_PAIRS)  # same-language pairs included


def test_cross_per_batch_uses_one_pair():
  spec = schedule.make_spec({'batch_size': 16, 'type_probs': {'cross': 1.0},
                             'cross_pairs': 'per_batch'}, [_source()])
  seen = set()
  for p in _plans(spec, steps=300):
    pairs = set(zip(p.query_langs, p.passage_langs))
    assert len(pairs) == 1 and all(q != d for q, d in pairs)
    seen |= pairs
  assert len(seen) == 12


def test_pure_function_of_seed_and_step():
  spec = schedule.make_spec({'batch_size': 8, 'type_probs': {'mono': .3, 'cross': .4,
                                                              'mixed': .3}}, [_source()])
  forward = _plans(spec, seed=3, steps=50)
  backward = [schedule.batch_plan(spec, 3, s) for s in reversed(range(50))][::-1]
  assert forward == backward
  assert schedule.batch_plan(spec, 3, 10**12).step == 10**12  # any step, O(1)
  other = _plans(spec, seed=4, steps=50)
  assert forward != other


def test_type_restricted_to_sources_that_can_make_it():
  english_only = _source('en_only', 10_000, langs=('en',))
  spec = schedule.make_spec({'batch_size': 4}, [english_only, _source('multi', 10)])
  for p in _plans(spec, steps=200):
    if p.batch_type == 'cross':
      assert p.source == 'multi'


@pytest.mark.parametrize('config, match', [
    ({'batch_size': 0}, 'batch_size'),
    ({'batch_size': 4, 'type_probs': {'mono': 0.5, 'cross': 0.6}}, 'sum to 1'),
    ({'batch_size': 4, 'type_probs': {'hybrid': 1.0}}, 'unknown batch types'),
    ({'batch_size': 4, 'cross_pairs': 'sometimes'},
     "^schedule: cross_pairs must be 'per_example' or 'per_batch', got 'sometimes'$"),
    ({'batch_size': 4, 'mono_lang_sampling': 'zipf'},
     "^schedule: mono_lang_sampling must be 'uniform' or 'size', got 'zipf'$"),
    ({'batch_size': 4, 'source_temperature': 0}, 'source_temperature'),
])
def test_bad_config_raises(config, match):
  with pytest.raises(ValueError, match=match):
    schedule.make_spec(config, [_source()])


def test_type_without_usable_source_raises():
  with pytest.raises(ValueError, match="usable for 'cross'"):
    schedule.make_spec({'batch_size': 4}, [_source(langs=('en',))])
