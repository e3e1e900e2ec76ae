"""hybrid_ir.sampler on a small JSONL store: the counter-based permutation, batches as a function
of (data, config, seed, step), hosts' slices, batch types, epochs and passage identities."""
import collections
import json

import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir import sampler as sampler_lib
from hybrid_ir import sharding

NUM_GROUPS = 30
SHARED = {0, 10, 20}  # these groups' positives are one passage (one positive_id)


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  folder = tmp_path_factory.mktemp('sampler')
  with open(folder / 'records.jsonl', 'w') as f:
    for g in range(NUM_GROUPS):
      for lang in ('en', 'de'):
        record = {'group_id': f'g{g:02d}', 'lang': lang, 'query': f'q{g} {lang}',
                  'positive': f'p{g} {lang}'}
        if g in SHARED:
          record['positive_id'] = 'shared'
        f.write(json.dumps(record) + '\n')
  store = data.open_store(dict(name='toy', kind='jsonl', paths=[str(folder / 'records.jsonl')]),
                          folder / 'stores')
  return sampler_lib.make_source('toy', store, {}, 0)


def _sampler(source, **config):
  return sampler_lib.Sampler({'toy': source}, dict({'batch_size': 6, 'seed': 3}, **config))


def _plain(batch):
  return json.loads(json.dumps({k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v
                                for k, v in batch.items()}))


@pytest.mark.parametrize('size', [1, 2, 5, 16, 17, 1190])
def test_index_shuffle_is_a_permutation_that_depends_on_the_seed(size):
  perms = [[sampler_lib.index_shuffle(i, size, seed) for i in range(size)] for seed in (0, 1)]
  assert all(sorted(p) == list(range(size)) for p in perms)
  if size >= 16:
    assert perms[0] != perms[1]
  with pytest.raises(ValueError, match=rf'index {size} not in \[0, {size}\)'):
    sampler_lib.index_shuffle(size, size, 0)


def test_batches_are_a_function_of_seed_and_step_and_resume_from_the_state(source):
  a, b = _sampler(source), _sampler(source)
  first = [_plain(a.next_batch()) for _ in range(8)]
  assert first == [_plain(b.next_batch()) for _ in range(8)]
  other = _sampler(source, seed=4)
  assert [_plain(other.next_batch())['group'] for _ in range(8)] != [x['group'] for x in first]
  # A sampler given the state after step 3 continues with steps 4.. exactly.
  c = _sampler(source)
  for _ in range(3):
    c.next_batch()
  state = json.loads(json.dumps(c.get_state()))
  d = _sampler(source)
  d.set_state(state)
  assert [_plain(d.next_batch()) for _ in range(5)] == first[3:]
  assert [x['step'] for x in first] == list(range(8))


@pytest.mark.parametrize('processes', [1, 2, 3, 6])
def test_hosts_rows_in_process_order_make_up_the_global_batch(source, processes):
  glob = _sampler(source).next_batch()
  slices = [sampler_lib.batch_rows(glob, sharding.host_rows(6, p, processes))
            for p in range(processes)]
  for key in ('group', 'epoch', 'query_lang', 'passage_lang'):
    parts = [list(np.asarray(s[key]).tolist()) for s in slices]
    assert all(len(p) == 6 // processes for p in parts)
    assert sum(parts, []) == list(np.asarray(glob[key]).tolist())
  for key in ('step', 'batch_type', 'source'):
    assert all(s[key] == glob[key] for s in slices)


@pytest.mark.parametrize('batch_type', ['mono', 'cross', 'mixed'])
def test_batch_types_draw_from_their_language_pairs(source, batch_type):
  s = _sampler(source, type_probs={batch_type: 1.0})
  for _ in range(20):
    b = s.next_batch()
    assert b['batch_type'] == batch_type
    pairs = list(zip(b['query_lang'], b['passage_lang']))
    if batch_type == 'mono':  # one language for the whole batch
      assert len(set(pairs)) == 1 and pairs[0][0] == pairs[0][1]
    elif batch_type == 'cross':
      assert all(q != p for q, p in pairs)
    assert set(np.asarray(b['group']).tolist()) <= set(range(NUM_GROUPS))


def test_one_identity_per_batch_and_every_group_once_per_epoch(source):
  # One stream (en->en): 5 batches of 6 are one epoch of its 30 groups.
  s = sampler_lib.Sampler({'toy': sampler_lib.make_source('toy', source.store, {'langs': ['en']},
                                                          0)},
                          {'batch_size': 6, 'seed': 3, 'type_probs': {'mono': 1.0}})
  identity = source.group_identity
  seen = collections.Counter()
  for _ in range(5 * 4):
    b = s.next_batch()
    groups = np.asarray(b['group'])
    assert len(set(identity[groups].tolist())) == len(groups)  # no shared passage in a batch
    for g, e in zip(groups.tolist(), np.asarray(b['epoch']).tolist()):
      seen[g, e] += 1
  # Deferred draws move to a later batch, never dropped or repeated: each of the first three
  # epochs holds every group exactly once.
  for epoch in range(3):
    assert sorted(g for (g, e), n in seen.items() if e == epoch and n == 1) == list(
        range(NUM_GROUPS))
  assert max(seen.values()) == 1
  assert len({identity[g] for g in range(NUM_GROUPS)}) == NUM_GROUPS - len(SHARED) + 1


def test_unknown_languages_of_a_source_are_named(source):
  with pytest.raises(ValueError, match=r"source 'toy': languages \['fr'\] are not in its data; "
                     r"available: \['de', 'en'\]"):
    sampler_lib.make_source('toy', source.store, {'langs': ['en', 'fr']}, 0)
