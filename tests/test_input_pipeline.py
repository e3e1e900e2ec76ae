"""Tests for hybrid_ir.input_pipeline: batch semantics, exact resume, hosts, bad input."""
import collections
import json

import numpy as np
import pytest

from hybrid_ir import input_pipeline
from hybrid_ir import schedule

LANGS = ('ar', 'de', 'en', 'zh')
BUCKETS = (8, 16, 32)


def toy_tokenize(texts, kind):
  """Whitespace tokenizer with a kind prefix token, padded to the smallest fitting bucket."""
  ids = [[1 if kind == 'query' else 2] + [_word_id(w) for w in t.split()] for t in texts]
  length = next((b for b in BUCKETS if b >= max(map(len, ids))), BUCKETS[-1])  # else truncate
  out = np.zeros((len(texts), length), np.int32)
  for i, row in enumerate(ids):
    out[i, :len(row)] = row[:length]
  return {'input_ids': out, 'attention_mask': (out > 0).astype(np.int32)}


def _word_id(word):
  return 3 + sum(word.encode()) % 5000


def make_records(num_groups=60, langs=LANGS, missing=None, negatives=0, prefix='g'):
  """Records whose texts name their group and language, e.g. 'q g7 de'.

  missing: {lang: fraction of groups that lack this language} (MLQA-R-like coverage).
  """
  recs = []
  rng = np.random.default_rng(0)
  for g in range(num_groups):
    for l in langs:
      if missing and rng.random() < missing.get(l, 0.0):
        continue
      gid = f'{prefix}{g}'
      recs.append({'group_id': gid, 'lang': l, 'query': f'q {gid} {l}',
                   'positive': f'p {gid} {l}',
                   'negatives': [f'n{j} {gid} {l}' for j in range(negatives)]})
  return recs


def _config(**kw):
  base = {'batch_size': 8, 'seed': 1, 'type_probs': {'mono': 0.4, 'cross': 0.4, 'mixed': 0.2}}
  base.update(kw)
  return base


def test_batches_follow_plan_and_records():
  recs = {'full': make_records(60), 'sparse': make_records(120, missing={'ar': .5, 'zh': .5},
                                                           prefix='s')}
  sampler = input_pipeline.Sampler(recs, _config(batch_size=16))
  for _ in range(300):
    step = sampler.step
    b = sampler.next_texts()
    plan = schedule.batch_plan(sampler.spec, 1, step)
    assert b['step'] == step and b['batch_type'] == plan.batch_type
    assert list(b['query_lang']) == list(plan.query_langs)
    assert list(b['passage_lang']) == list(plan.passage_langs)
    assert len(set(b['group'])) == 16  # distinct groups: in-batch negatives are true negatives
    for q, p, ql, pl in zip(b['query_text'], b['passage_text'], b['query_lang'], b['passage_lang']):
      _, qg, qlang = q.split()
      _, pg, plang = p.split()
      assert (qg, qlang, plang) == (pg, ql, pl)  # query and positive: one group, planned langs
      assert qg.startswith('s' if b['source'] == 'sparse' else 'g')
    if b['batch_type'] == 'mono':
      assert len(set(b['query_lang']) | set(b['passage_lang'])) == 1
    if b['batch_type'] == 'cross':
      assert all(q != p for q, p in zip(b['query_lang'], b['passage_lang']))


def test_realised_frequencies_over_2000_steps():
  probs = {'mono': 0.5, 'cross': 0.5, 'mixed': 0.0}
  sampler = input_pipeline.Sampler({'x': make_records(40)}, _config(type_probs=probs))
  types, mono_langs, groups = collections.Counter(), collections.Counter(), collections.Counter()
  n = 2000
  for _ in range(n):
    b = sampler.next_texts()
    types[b['batch_type']] += 1
    if b['batch_type'] == 'mono':
      mono_langs[b['query_lang'][0]] += 1
    groups.update(b['group'].tolist())
  sd = lambda m, p: 5 * np.sqrt(m * p * (1 - p))  # 5-sigma binomial bound
  assert abs(types['mono'] - n * .5) <= sd(n, .5), types
  for l in LANGS:
    assert abs(mono_langs[l] - types['mono'] / 4) <= sd(types['mono'], .25), mono_langs
  # Streams walk whole epochs: every group is used, none starved.
  assert len(groups) == 40 and min(groups.values()) > 0.8 * n * 8 / 40


def _collect(pipeline, n):
  return [next(pipeline) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      if isinstance(x[k], dict):
        assert x[k].keys() == y[k].keys()
        for kk in x[k]:
          np.testing.assert_array_equal(x[k][kk], y[k][kk], err_msg=f'{k}/{kk}')
      else:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize('num_negatives', [0, 2])
def test_exact_resume(num_negatives):
  # 24 groups, batch 8: streams wrap epochs every few steps, so resume crosses epochs.
  recs = {'a': make_records(24, negatives=2), 'b': make_records(30, negatives=2, prefix='b')}
  config = _config(num_negatives=num_negatives, prefetch=4)
  n, k = 14, 6
  straight = input_pipeline.Pipeline(recs, config, toy_tokenize, process_index=0,
                                     process_count=1)
  expected = _collect(straight, n)
  first = input_pipeline.Pipeline(recs, config, toy_tokenize, process_index=0, process_count=1)
  head = _collect(first, k)
  state = json.loads(json.dumps(first.get_state()))  # JSON round trip, as a checkpoint would
  assert state['step'] == k  # the consumed position, although tf.data prefetched further
  first.close()
  resumed = input_pipeline.Pipeline(recs, config, toy_tokenize, process_index=0,
                                    process_count=1, state=state)
  _assert_batches_equal(head + _collect(resumed, n - k), expected)
  assert [b['step'] for b in expected] == list(range(n))


def test_tokens_negatives_and_shapes():
  recs = {'a': make_records(24, negatives=3)}
  p = input_pipeline.Pipeline(recs, _config(num_negatives=2), toy_tokenize, process_index=0,
                              process_count=1)
  sampler = input_pipeline.Sampler(recs, _config(num_negatives=2))
  for _ in range(5):
    b, texts = next(p), sampler.next_texts()
    np.testing.assert_array_equal(b['query']['input_ids'],
                                  toy_tokenize(list(texts['query_text']), 'query')['input_ids'])
    np.testing.assert_array_equal(b['passage']['input_ids'],
                                  toy_tokenize(list(texts['passage_text']), 'passage')['input_ids'])
    assert b['negative']['input_ids'].shape[0] == 16 and b['group'].dtype == np.int32
    # Hard negatives come from the passage-language record of the same group.
    negs = texts['negative_text'].reshape(8, 2)
    for row, pos in zip(negs, texts['passage_text']):
      assert [n.split()[1:] for n in row] == [pos.split()[1:]] * 2
  p.close()


def test_two_hosts_disjoint_shards_identical_schedule():
  recs = {'a': make_records(80), 'b': make_records(60, missing={'zh': .4}, prefix='b')}
  config = _config(batch_size=16)
  hosts = [input_pipeline.Sampler(recs, config, process_index=h, process_count=2)
           for h in range(2)]
  single = input_pipeline.Sampler(recs, config)
  seen = [set(), set()]
  for _ in range(200):
    step = hosts[0].step
    b0, b1 = (h.next_texts() for h in hosts)
    plan = schedule.batch_plan(single.spec, 1, step)
    for k in ('step', 'batch_type', 'source'):
      assert b0[k] == b1[k]
    assert b0['batch_type'] == plan.batch_type and len(b0['group']) == len(b1['group']) == 8
    glob_q = list(b0['query_lang']) + list(b1['query_lang'])
    glob_p = list(b0['passage_lang']) + list(b1['passage_lang'])
    assert (glob_q, glob_p) == (list(plan.query_langs), list(plan.passage_langs))
    assert len(set(b0['group']) | set(b1['group'])) == 16  # a global batch of distinct groups
    seen[0] |= set(b0['group'].tolist())
    seen[1] |= set(b1['group'].tolist())
  assert not seen[0] & seen[1] and seen[0] and seen[1]
  assert hosts[0].spec == hosts[1].spec == single.spec


def test_state_of_other_host_replays_and_other_config_rejected():
  recs = {'a': make_records(40, missing={'zh': .3})}
  config = _config(batch_size=16)
  s0, s1, straight = (input_pipeline.Sampler(recs, config, process_index=h, process_count=2)
                      for h in (0, 1, 1))
  for _ in range(23):
    s0.next_texts()
    straight.next_texts()
  s1.set_state(s0.get_state())  # e.g. a checkpoint written by process 0 only
  assert s1.get_state() == straight.get_state()
  for _ in range(5):
    a, b = s1.next_texts(), straight.next_texts()
    assert all(np.array_equal(a[k], b[k]) for k in a)
  other = input_pipeline.Sampler(recs, _config(batch_size=16, seed=2), process_index=0,
                                 process_count=2)
  with pytest.raises(ValueError, match='fingerprint'):
    other.set_state(s0.get_state())


def test_unknown_language_lists_available():
  with pytest.raises(ValueError, match=r"\['xx'\].*available: \['ar', 'de', 'en', 'zh'\]"):
    input_pipeline.Sampler({'a': make_records(20)}, _config(languages=['en', 'xx']))


def test_languages_subset_restricts_batches():
  sampler = input_pipeline.Sampler({'a': make_records(20)}, _config(languages=['en', 'de']))
  langs = set()
  for _ in range(50):
    b = sampler.next_texts()
    langs |= set(b['query_lang']) | set(b['passage_lang'])
  assert langs == {'en', 'de'}


def test_too_few_groups():
  # zh has only 5 of 40 groups: (zh, *) pairs cannot fill a batch of 8 distinct groups.
  recs = {'a': [r for r in make_records(40) if r['lang'] != 'zh' or int(r['group_id'][1:]) < 5]}
  with pytest.raises(ValueError, match=r"too few groups.*\('zh', 'zh'\)"):
    input_pipeline.Sampler(recs, _config(too_few='error'))
  sampler = input_pipeline.Sampler(recs, _config())  # too_few='drop' (default)
  pairs = sampler.spec.sources[0].pairs
  assert pairs and not any('zh' in pair for pair in pairs)
  with pytest.raises(ValueError, match='no pair left'):
    input_pipeline.Sampler({'a': make_records(5)}, _config())


def test_bad_batch_size_and_missing_negatives():
  with pytest.raises(ValueError, match='multiple of process_count'):
    input_pipeline.Sampler({'a': make_records(40)}, _config(batch_size=9), process_index=0,
                           process_count=2)
  with pytest.raises(ValueError, match='has 0 negatives, num_negatives is 1'):
    input_pipeline.Sampler({'a': make_records(40)}, _config(num_negatives=1))


def test_lareqa_training_source(shared_data):
  config = _config(batch_size=32, sources=[
      {'name': 'xquad-r', 'kind': 'squad', 'path': str(shared_data / 'xquad-r'),
       'split': 'train', 'num_folds': 5, 'fold': 0}])
  p = input_pipeline.make_pipeline(config, toy_tokenize, process_index=0, process_count=1)
  for _ in range(3):
    b = next(p)
    assert b['query']['input_ids'].shape[0] == 32 and len(set(b['group'])) == 32
  p.close()
