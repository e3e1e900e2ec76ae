"""hybrid_ir.evaluators.embedding_cache: a corpus encoded shard by shard resumes with only the
missing shards, the manifest refuses other inputs by name, and a cache key names the exact
weights (params_fingerprint) and encoding settings."""
import json

import numpy as np
import pytest

from hybrid_ir.evaluators import embedding_cache

TEXTS = [f'passage number {i}' for i in range(300)]
DIM = 8


class Encoder:
  """A fixed vector per text (its number, spread over DIM); records every call; raises
  KeyboardInterrupt, as a kill mid-encode looks to our code, after `fail_after` calls."""

  def __init__(self, fail_after=None):
    self.calls, self.fail_after = [], fail_after

  def __call__(self, params, texts, kind):
    if self.fail_after is not None and len(self.calls) >= self.fail_after:
      raise KeyboardInterrupt('killed')
    self.calls.append((kind, texts[0], len(texts)))
    n = np.array([int(t.split()[-1]) for t in texts], np.float32)
    return n[:, None] + np.arange(DIM, dtype=np.float32)[None, :] / DIM


def _encode(enc, out_dir, key='m', **kw):
  return embedding_cache.encode_sharded(enc, None, TEXTS, out_dir, key=key, shard_size=40,
                                        progress=False, **kw)


def test_killed_encode_resumes_only_missing_shards(tmp_path):
  cache = tmp_path / 'cache'
  with pytest.raises(KeyboardInterrupt):
    _encode(Encoder(fail_after=3), cache)
  manifest = json.loads((cache / 'manifest.json').read_text())
  assert manifest['done'] == [0, 1, 2]
  resumed = Encoder()
  shards = _encode(resumed, cache)
  # 300 texts / 40 = 8 shards; only shards 3..7 are encoded again.
  assert resumed.calls == [('passage', TEXTS[i * 40], min(40, 300 - i * 40)) for i in range(3, 8)]
  fresh = _encode(Encoder(), tmp_path / 'fresh')
  np.testing.assert_array_equal(np.concatenate(shards), np.concatenate(fresh))
  np.testing.assert_array_equal(np.concatenate(fresh), Encoder()(None, TEXTS, 'passage'))
  assert [len(s) for s in fresh] == [40] * 7 + [20]
  again = Encoder()
  _encode(again, cache)
  assert again.calls == []
  with pytest.raises(ValueError, match="manifest.json: written for other inputs.*'key'"):
    _encode(Encoder(), cache, key='other')


def test_a_shard_recorded_but_missing_is_encoded_again_and_no_temporary_file_stays(tmp_path):
  _encode(Encoder(), tmp_path)
  (tmp_path / 'shard-00005.npy').unlink()
  again = Encoder()
  _encode(again, tmp_path)
  assert again.calls == [('passage', TEXTS[200], 40)]
  assert sorted(p.name for p in tmp_path.iterdir()) == (
      ['manifest.json'] + [f'shard-{i:05d}.npy' for i in range(8)])
  manifest = json.loads((tmp_path / 'manifest.json').read_text())
  assert (manifest['done'], manifest['dim'], manifest['num_texts']) == (list(range(8)), DIM, 300)


@pytest.mark.parametrize('change, field', [
    (dict(kind='query'), 'kind'), (dict(shard_size=50), 'shard_size'),
    (dict(texts=TEXTS[:-1] + ['passage number 0']), 'texts_sha1'),
    (dict(texts=TEXTS[:-1]), 'num_texts')])
def test_the_manifest_refuses_other_inputs_by_name(tmp_path, change, field):
  _encode(Encoder(), tmp_path)
  args = dict(key='m', shard_size=40, kind='passage', progress=False)
  args.update({k: v for k, v in change.items() if k != 'texts'})
  with pytest.raises(ValueError, match=rf"written for other inputs \(.*'{field}'"):
    embedding_cache.encode_sharded(Encoder(), None, change.get('texts', TEXTS), tmp_path, **args)


def test_a_predict_fn_of_the_wrong_shape_is_named(tmp_path):
  def flat(params, texts, kind):
    return np.zeros(len(texts), np.float32)
  with pytest.raises(ValueError, match=r'predict_fn returned shape \(40,\) for 40 texts \(shard '
                                       r'0\)'):
    embedding_cache.encode_sharded(flat, None, TEXTS, tmp_path, key='m', shard_size=40,
                                   progress=False)


def _params(scale=1.0):
  return {'dense': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3) * scale,
                    'bias': np.zeros(3, np.float32)}, 'embed': np.ones((4, 2), np.float32)}


def test_params_fingerprint_names_the_exact_weights():
  a = embedding_cache.params_fingerprint(_params())
  assert len(a) == 64 and int(a, 16) >= 0  # a sha256 hex digest
  assert embedding_cache.params_fingerprint(_params()) == a  # equal params, equal fingerprint
  # The same values as other arrays, or in another dict order, are the same weights.
  reordered = {'embed': np.ones((4, 2), np.float32),
               'dense': {'bias': np.zeros(3, np.float32),
                         'kernel': np.arange(6, dtype=np.float32).reshape(2, 3).copy()}}
  assert embedding_cache.params_fingerprint(reordered) == a
  others = [_params(2.0),  # other values
            {**_params(), 'embed': np.ones((2, 4), np.float32)},  # the same bytes, other shape
            {**_params(), 'embed': np.ones((4, 2), np.float64)},  # other dtype
            {'dense': _params()['dense'], 'embed2': np.ones((4, 2), np.float32)}]  # other path
  one_bit = _params()
  one_bit['dense']['kernel'].view(np.uint32)[1, 2] ^= 1
  fingerprints = [embedding_cache.params_fingerprint(p) for p in others + [one_bit]]
  assert len(set(fingerprints) | {a}) == len(fingerprints) + 1
  assert embedding_cache.params_fingerprint(None) == embedding_cache.params_fingerprint({})


def test_cache_key_changes_with_the_settings_and_the_params():
  import ml_collections
  settings = {'name': 'bundled:e5-small', 'pooling': 'mean'}
  key = embedding_cache.cache_key(settings, _params())
  assert key == embedding_cache.cache_key(dict(settings), _params())
  # A ConfigDict is keyed by its contents, as the dict it holds.
  assert embedding_cache.cache_key(ml_collections.ConfigDict(settings), _params()) == key
  assert embedding_cache.cache_key({**settings, 'pooling': 'cls'}, _params()) != key
  assert embedding_cache.cache_key(settings, _params(2.0)) != key
  assert len({key, embedding_cache.cache_key(settings, None),
              embedding_cache.cache_key({}, _params())}) == 3
