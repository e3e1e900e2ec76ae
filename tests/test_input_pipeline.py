"""The sampler and the input pipeline: batch semantics, distinct passage identities, deferral,
topology-independent global batches, exact resume on any topology, per-source negatives."""
import collections
import json

import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir import input_pipeline
from hybrid_ir import sampler as sampler_lib
from hybrid_ir import schedule

LANGS = ('ar', 'de', 'en', 'zh')
BUCKETS = (8, 16, 32)


def toy_tokenize(texts, kind):
  """Whitespace tokenizer with a kind prefix token, padded to the smallest fitting bucket."""
  ids = [[1 if kind == 'query' else 2] + [3 + sum(w.encode()) % 5000 for w in t.split()]
         for t in texts]
  length = next((b for b in BUCKETS if b >= max(map(len, ids))), BUCKETS[-1])
  out = np.zeros((len(texts), length), np.int32)
  for i, row in enumerate(ids):
    out[i, :len(row)] = row[:length]
  return {'input_ids': out, 'attention_mask': (out > 0).astype(np.int32)}


def make_source(tmp_path, name='a', num_groups=60, langs=LANGS, missing=None, negatives=0,
                shared=0, num_negatives=0, offset=0, only=None, **cfg):
  """A JSONL source whose texts name group and language ('q g7 de', 'p g7 de', 'n1 g7 de').

  missing: {lang: fraction of groups without it}. only: {lang: n}, the lang only in the first n
  groups. shared: groups 2k and 2k+1 for k < shared
  share one positive_id (one passage identity), as questions sharing an answer sentence do.
  Group g's negatives: n0 .. n(negatives - 1 - g % 2): odd groups have one fewer.
  """
  rng = np.random.default_rng(0)
  path = tmp_path / f'{name}.jsonl'
  with open(path, 'w') as f:
    for g in range(num_groups):
      for l in langs:
        if missing and rng.random() < missing.get(l, 0.0):
          continue
        if only and g >= only.get(l, num_groups):
          continue
        gid = f'{name}{g:03d}'
        rec = {'group_id': gid, 'lang': l, 'query': f'q {gid} {l}', 'positive': f'p {gid} {l}',
               'negatives': [f'n{j} {gid} {l}' for j in range(max(0, negatives - g % 2))]}
        if g < 2 * shared:
          rec['positive_id'] = f'shared{g // 2}'
        f.write(json.dumps(rec) + '\n')
  store = data.open_store(dict(name=name, kind='jsonl', paths=[str(path)]),
                          tmp_path / 'stores')
  return sampler_lib.make_source(name, store, dict(cfg, num_negatives=num_negatives), offset)


def _config(**kw):
  base = {'batch_size': 8, 'seed': 1, 'type_probs': {'mono': 0.4, 'cross': 0.4, 'mixed': 0.2}}
  base.update(kw)
  return base


def texts_of(source, batch, k=0):
  return input_pipeline.read_slice(source, batch, k)


def test_batches_follow_plan_and_records(tmp_path):
  full = make_source(tmp_path, 'g', 60)
  sparse = make_source(tmp_path, 's', 120, missing={'ar': .5, 'zh': .5}, offset=60)
  sources = {'g': full, 's': sparse}
  sampler = sampler_lib.Sampler(sources, _config(batch_size=16))
  for _ in range(300):
    step = sampler.step
    b = sampler.next_batch()
    plan = schedule.batch_plan(sampler.spec, 1, step)
    assert b['step'] == step and b['batch_type'] == plan.batch_type
    assert (b['query_lang'], b['passage_lang']) == (plan.query_langs, plan.passage_langs)
    t = texts_of(sources[b['source']], b)
    assert len(set(t['identity'])) == 16  # distinct passages: in-batch negatives are negatives
    for q, p, ql, pl in zip(t['query_text'], t['passage_text'], b['query_lang'],
                            b['passage_lang']):
      _, qg, qlang = q.split()
      _, pg, plang = p.split()
      assert (qg, qlang, plang) == (pg, ql, pl)  # query and positive: one group, planned langs
      assert qg.startswith(b['source'])
    if b['batch_type'] == 'mono':
      assert len(set(b['query_lang']) | set(b['passage_lang'])) == 1
    if b['batch_type'] == 'cross':
      assert all(q != p for q, p in zip(b['query_lang'], b['passage_lang']))


def test_shared_identities_are_deferred_not_dropped(tmp_path):
  # 40 groups, 30 of them in pairs sharing a passage: 25 identities for batches of 8.
  src = make_source(tmp_path, 'a', 40, langs=('en',), shared=15)
  sampler = sampler_lib.Sampler({'a': src}, _config(type_probs={'mono': 1.0}))
  counts = collections.Counter()
  epochs = 30  # 40 groups per epoch, 5 batches
  for _ in range(epochs * 5):
    b = sampler.next_batch()
    ident = src.group_identity[b['group']]
    assert len(set(ident.tolist())) == 8
    counts.update(b['group'].tolist())
  assert sampler.deferrals > 0
  # Every group is drawn once per epoch of its stream, give or take what is pending.
  pending = len(sampler.pending['a|en|en'])
  assert set(counts) == set(range(40))
  assert all(abs(c - epochs) <= pending + 1 for c in counts.values()), counts


def test_realised_frequencies_over_2000_steps(tmp_path):
  probs = {'mono': 0.5, 'cross': 0.5, 'mixed': 0.0}
  sampler = sampler_lib.Sampler({'x': make_source(tmp_path, 'x', 40)}, _config(type_probs=probs))
  types, mono_langs, groups = collections.Counter(), collections.Counter(), collections.Counter()
  n = 2000
  for _ in range(n):
    b = sampler.next_batch()
    types[b['batch_type']] += 1
    if b['batch_type'] == 'mono':
      mono_langs[b['query_lang'][0]] += 1
    groups.update(b['group'].tolist())
  sd = lambda m, p: 5 * np.sqrt(m * p * (1 - p))  # 5-sigma binomial bound
  assert abs(types['mono'] - n * .5) <= sd(n, .5), types
  for l in LANGS:
    assert abs(mono_langs[l] - types['mono'] / 4) <= sd(types['mono'], .25), mono_langs
  assert len(groups) == 40 and min(groups.values()) > 0.8 * n * 8 / 40


def _pipeline(sources, config, process_index=0, process_count=1, state=None):
  return input_pipeline.Pipeline(sources, config, toy_tokenize, process_index=process_index,
                                 process_count=process_count, state=state)


def _collect(pipeline, n):
  out = [next(pipeline) for _ in range(n)]
  return out


def _concat(host_batches):
  """The global batch from the hosts' batches, in process order."""
  first = host_batches[0]
  out = {k: first[k] for k in ('step', 'batch_type', 'source')}
  for k in ('group', 'identity', 'query_lang', 'passage_lang', 'negative_identity',
            'negative_valid'):
    if k in first:
      out[k] = np.concatenate([b[k] for b in host_batches])
  return out


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      if isinstance(x[k], dict):
        for kk in x[k]:
          np.testing.assert_array_equal(x[k][kk], y[k][kk], err_msg=f'{k}/{kk}')
      else:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize('hosts', [2, 4])
def test_global_batch_is_the_same_on_any_number_of_hosts(tmp_path, hosts):
  sources = {'a': make_source(tmp_path, 'a', 60, negatives=3, num_negatives=2),
             'b': make_source(tmp_path, 'b', 50, missing={'zh': .4}, offset=60)}
  config = _config(batch_size=16)
  single = _collect(_pipeline(sources, config), 12)
  per_host = [_collect(_pipeline(sources, config, h, hosts), 12) for h in range(hosts)]
  for step, one in enumerate(single):
    parts = [per_host[h][step] for h in range(hosts)]
    assert all(len(p['group']) == 16 // hosts for p in parts)
    glob = _concat(parts)
    for k in glob:
      np.testing.assert_array_equal(glob[k], one[k], err_msg=k)
    # Tokens too: each host tokenized exactly its slice of the global batch's texts.
    rows = np.array_split(np.arange(16), hosts)
    for h, p in enumerate(parts):
      texts = texts_of(sources[one['source']], {
          'query_lang': one['query_lang'][rows[h]], 'passage_lang': one['passage_lang'][rows[h]],
          'group': one['group'][rows[h]] - sources[one['source']].offset,
          'epoch': np.zeros(len(rows[h]), int)}, 2)
      np.testing.assert_array_equal(p['query']['input_ids'],
                                    toy_tokenize(texts['query_text'], 'query')['input_ids'])


@pytest.mark.parametrize('saved_on, restored_on', [((0, 1), (0, 1)), ((1, 2), (0, 1)),
                                                   ((0, 2), (3, 4)), ((0, 1), (1, 2))])
def test_exact_resume_on_any_host_and_topology(tmp_path, saved_on, restored_on):
  # 24 groups, batch 8: streams wrap epochs every few steps, so resume crosses epochs.
  sources = {'a': make_source(tmp_path, 'a', 24, negatives=2, num_negatives=1, shared=3),
             'b': make_source(tmp_path, 'b', 30, offset=24)}
  config = _config(prefetch=4)
  n, k = 14, 6
  expected = _collect(_pipeline(sources, config, *restored_on), n)
  first = _pipeline(sources, config, *saved_on)
  _collect(first, k)
  state = json.loads(json.dumps(first.get_state()))  # JSON round trip, as a checkpoint would
  assert state['step'] == k  # the consumed position, although tf.data prefetched further
  first.close()
  resumed = _pipeline(sources, config, *restored_on, state=state)
  _assert_batches_equal(_collect(resumed, n - k), expected[k:])
  assert [b['step'] for b in expected] == list(range(n))


def test_state_of_other_data_or_config_is_rejected(tmp_path):
  src = make_source(tmp_path, 'a', 40)
  sampler = sampler_lib.Sampler({'a': src}, _config())
  for _ in range(5):
    sampler.next_batch()
  state = sampler.get_state()
  other = sampler_lib.Sampler({'a': src}, _config(seed=2))
  with pytest.raises(ValueError, match='fingerprint.*changed since the checkpoint'):
    other.set_state(state)
  with pytest.raises(ValueError, match='version'):
    sampler.set_state(dict(state, version=1))


def test_negatives_per_source_masks_and_rotation(tmp_path):
  a = make_source(tmp_path, 'a', 24, negatives=3, num_negatives=2)  # odd groups have 2
  b = make_source(tmp_path, 'b', 20, offset=24)  # QA pairs without negatives
  few = make_source(tmp_path, 'c', 20, negatives=1, num_negatives=2, offset=44)  # 0 or 1
  p = _pipeline({'a': a, 'b': b, 'c': few}, _config(prefetch=1))
  seen = collections.defaultdict(set)
  for _ in range(60):
    batch = next(p)
    assert batch['negative']['input_ids'].shape[0] == 16  # K = 2 slots in every batch
    valid = batch['negative_valid'].reshape(8, 2)
    if batch['source'] == 'b':
      assert not valid.any()
      continue
    src = {'a': a, 'c': few}[batch['source']]
    for i, g in enumerate(batch['group'] - src.offset):
      available = {'a': 3, 'c': 1}[batch['source']] - g % 2
      assert valid[i].sum() == min(2, available)
    # Negatives come from the passage language and carry that language's row identities.
    for j in np.flatnonzero(batch['negative_valid']):
      idx = src.store.index(batch['passage_lang'][j // 2])
      assert batch['negative_identity'][j] in np.asarray(idx.row_identity)
    neg_ident = batch['negative_identity'][batch['negative_valid']]
    assert not set(neg_ident.tolist()) & set(batch['identity'].tolist())
    if batch['source'] == 'a':
      for i, g in enumerate(batch['group'] - src.offset):
        seen[int(g)].add(tuple(batch['negative']['input_ids'][2 * i:2 * i + 2, 1].tolist()))
  # Groups with 3 negatives see different pairs of them in different epochs.
  assert any(len(v) > 1 for g, v in seen.items() if g % 2 == 0)
  p.close()


def test_query_language_negatives_for_cross_lingual_examples(tmp_path):
  # negative_langs='query+passage': an X->Y example reads K // 2 negatives in X, the rest in Y;
  # a mono example reads all of them in its one language. Texts name group and language.
  src = make_source(tmp_path, 'x', 40, negatives=6, num_negatives=4,  # 5 or 6 per group
                    negative_langs='query+passage')
  sampler = sampler_lib.Sampler({'x': src}, _config(type_probs={'mono': 0.5, 'cross': 0.5}))
  kinds = set()
  for _ in range(20):
    b = sampler.next_batch()
    t = texts_of(src, b, 4)
    for i, (q, p) in enumerate(zip(b['query_lang'], b['passage_lang'])):
      negs = t['negative_text'][4 * i:4 * i + 4]
      gid = f"x{int(b['group'][i]):03d}"
      assert all(n.split()[1] == gid for n in negs)  # the example's own group
      want = [p, p, q, q] if q != p else [p] * 4
      assert [n.split()[2] for n in negs] == want
      kinds.add(q != p)
      for j, n in enumerate(negs):  # identities are those of the rows read, in their language
        idx = src.store.index(n.split()[2])
        assert t['negative_identity'][4 * i + j] in np.asarray(idx.row_identity)
    assert not set(t['negative_identity'].tolist()) & set(t['identity'].tolist())
  assert kinds == {True, False}
  with pytest.raises(ValueError, match="negative_langs='query'; valid: passage, query\\+passage"):
    make_source(tmp_path, 'y', 10, negatives=1, num_negatives=1, negative_langs='query')


def test_too_few_distinct_passages(tmp_path):
  # zh has only 5 of 40 groups: (zh, *) pairs cannot fill a batch of 8 distinct passages.
  src = make_source(tmp_path, 'a', 40, only={'zh': 5})
  with pytest.raises(ValueError, match=r"fewer distinct passages than batch_size 8.*\('zh', 'zh'\)"):
    sampler_lib.Sampler({'a': src}, _config(too_few='error'))
  sampler = sampler_lib.Sampler({'a': src}, _config())  # too_few='drop' (default)
  pairs = sampler.spec.sources[0].pairs
  assert pairs and not any('zh' in pair for pair in pairs)
  # Shared passages count once: 10 groups in 5 identities cannot make a batch of 8.
  with pytest.raises(ValueError, match='no pair left'):
    sampler_lib.Sampler({'a': make_source(tmp_path, 'b', 10, shared=5)}, _config())


def test_language_selection_and_errors(tmp_path):
  src = make_source(tmp_path, 'a', 20)
  with pytest.raises(ValueError, match=r"\['xx'\] are not in its data; available: \['ar', 'de'"):
    sampler_lib.make_source('a', src.store, {'langs': ['en', 'xx']}, 0)
  sub = sampler_lib.make_source('a', src.store, {'langs': ['en', 'de']}, 0)
  sampler = sampler_lib.Sampler({'a': sub}, _config())
  langs = set()
  for _ in range(50):
    b = sampler.next_batch()
    langs |= set(b['query_lang']) | set(b['passage_lang'])
  assert langs == {'en', 'de'}
  with pytest.raises(ValueError, match='multiple of the process count 3'):
    _pipeline({'a': src}, _config(), 0, 3)
  with pytest.raises(ValueError, match='num_negatives per source'):
    input_pipeline.open_sources({'num_negatives': 1, 'sources': []})


def test_bitext_makes_no_mono_pairs(tmp_path):
  path = tmp_path / 'b.tsv'
  path.write_text('id\tlang\ttext\n' + ''.join(f'v{i}\t{l}\ttext {i} {l}\n' for i in range(20)
                                               for l in ('en', 'de')))
  store = data.open_store(dict(name='b', kind='bitext', paths=[str(path)]), tmp_path / 's')
  sampler = sampler_lib.Sampler({'b': sampler_lib.make_source('b', store, {}, 0)},
                                _config(type_probs={'cross': 1.0}))
  assert sampler.spec.sources[0].pairs == (('de', 'en'), ('en', 'de'))
  with pytest.raises(ValueError, match="no source has language pairs usable for 'mono'"):
    sampler_lib.Sampler({'b': sampler_lib.make_source('b', store, {}, 0)},
                        _config(type_probs={'mono': 1.0}))


def test_lareqa_training_source(shared_data, tmp_path):
  config = _config(batch_size=32, store_dir=str(tmp_path / 'stores'), sources=[
      {'name': 'xquad-r', 'kind': 'squad', 'path': str(shared_data / 'xquad-r'),
       'split': 'train', 'num_folds': 5, 'fold': 0}])
  p = input_pipeline.make_pipeline(config, toy_tokenize, process_index=0, process_count=1)
  for _ in range(3):
    b = next(p)
    assert b['query']['input_ids'].shape[0] == 32 and len(set(b['identity'])) == 32
  p.close()


def test_a_closed_pipeline_lets_go_of_its_tokenizer_and_stores(tmp_path):
  """TensorFlow keeps a dataset's Python functions registered after the dataset is gone; a
  closed pipeline must not keep the model's tokenizer (and with it the model) or the stores
  alive through them, or a process that trains run after run grows with every run."""
  import gc
  import weakref

  class Tokenizer:  # stands for a model whose bound method tokenizes
    def tokenize(self, texts, kind):
      return toy_tokenize(texts, kind)

  tokenizer = Tokenizer()
  sources = {'g': make_source(tmp_path, 'g', 60)}
  pipeline = input_pipeline.Pipeline(sources, _config(), tokenizer.tokenize)
  _collect(pipeline, 3)
  alive = weakref.ref(tokenizer), weakref.ref(sources['g'].store)
  pipeline.close()
  del tokenizer, sources, pipeline
  gc.collect()
  assert [ref() is None for ref in alive] == [True, True]
