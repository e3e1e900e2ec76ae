"""hybrid_ir.data.store, the store's own mechanics: input digests cached by file identity, content
fingerprints that ignore paths, what may be replaced at a store's path, the bytes a store records,
and the connected components that make passage identities."""
import json
import os
import pathlib

import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir.data import store as store_lib


def write(path, text):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def count_digests(monkeypatch):
  calls = []
  real = store_lib.file_digest

  def counting(path):
    calls.append(str(path))
    return real(path)
  monkeypatch.setattr(store_lib, 'file_digest', counting)
  return calls


def test_input_digests_are_read_once_and_again_only_when_a_file_changes(tmp_path, monkeypatch):
  a = write(tmp_path / 'data' / 'a.jsonl', 'alpha\n')
  link = tmp_path / 'link'
  link.symlink_to(tmp_path / 'data')
  cache = tmp_path / 'stores' / 'digests.json'
  calls = count_digests(monkeypatch)
  first = store_lib.file_fingerprints([a], cache)
  assert calls == [str(a)] and first[0]['sha256'] == store_lib.file_digest(a)
  calls.clear()
  # The same file, by the same or another path: no read.
  assert store_lib.file_fingerprints([a], cache)[0]['sha256'] == first[0]['sha256']
  via_link = store_lib.file_fingerprints([link / 'a.jsonl'], cache)
  assert calls == [] and via_link[0]['sha256'] == first[0]['sha256']
  assert via_link[0]['path'] == str(link / 'a.jsonl')  # recorded as given, keyed by real path
  # New bytes of the same size with the old mtime put back: read again (its ctime moved).
  st = os.stat(a)
  a.write_text('alphA\n')
  os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
  changed = store_lib.file_fingerprints([a], cache)
  assert calls == [str(a)] and changed[0]['sha256'] != first[0]['sha256']
  # A damaged or missing cache only costs a read.
  cache.write_text('{not json')
  assert store_lib.file_fingerprints([a], cache) == changed
  with pytest.raises(FileNotFoundError, match='training source file not found: .*nope'):
    store_lib.file_fingerprints([tmp_path / 'nope'], cache)


def test_content_fingerprint_ignores_paths_and_names_kind_settings_and_bytes():
  inputs = [{'path': '/a/x.jsonl', 'size': 3, 'sha256': 'ab'}]
  moved = [{'path': '/b/y.jsonl', 'size': 3, 'sha256': 'ab'}]
  fp = store_lib.content_fingerprint('jsonl', {'max_bad_lines': 0}, inputs)
  assert fp == store_lib.content_fingerprint('jsonl', {'max_bad_lines': 0}, moved)
  assert len({fp, store_lib.content_fingerprint('bitext', {'max_bad_lines': 0}, inputs),
              store_lib.content_fingerprint('jsonl', {'max_bad_lines': 1}, inputs),
              store_lib.content_fingerprint('jsonl', {'max_bad_lines': 0},
                                            [dict(inputs[0], sha256='ac')])}) == 4


def test_only_stores_and_folders_without_files_may_be_replaced(tmp_path):
  store_lib.check_replaceable(tmp_path / 'nothing')
  (tmp_path / 'empty' / 'texts').mkdir(parents=True)
  store_lib.check_replaceable(tmp_path / 'empty')
  write(tmp_path / 'full' / 'deep' / 'x.txt', 'mine')
  with pytest.raises(store_lib.StoreError, match=r'full is a folder that is not a hybrid_ir'):
    store_lib.check_replaceable(tmp_path / 'full')
  (tmp_path / 'linked').mkdir()
  (tmp_path / 'linked' / 'l').symlink_to(tmp_path / 'full')
  with pytest.raises(store_lib.StoreError, match='linked is a folder'):
    store_lib.check_replaceable(tmp_path / 'linked')
  write(tmp_path / 'fake' / 'meta.json', json.dumps({'format': 'something else'}))
  with pytest.raises(store_lib.StoreError, match='fake is a folder'):
    store_lib.check_replaceable(tmp_path / 'fake')
  # A folder of empty folders at an explicit store path is replaced by the store.
  src = write(tmp_path / 'r.jsonl', ''.join(json.dumps(
      {'group_id': f'g{g}', 'lang': 'en', 'query': f'q{g}', 'positive': f'p{g}'}) + '\n'
      for g in range(3)))
  store = data.open_store({'name': 's', 'kind': 'jsonl', 'paths': [str(src)],
                           'store': str(tmp_path / 'empty')}, tmp_path / 'stores')
  assert store.num_groups == 3 and store_lib.is_store(tmp_path / 'empty')


def test_meta_records_every_file_and_itself(tmp_path):
  src = write(tmp_path / 'r.jsonl', ''.join(json.dumps(
      {'group_id': f'g{g}', 'lang': l, 'query': f'q{g}{l}', 'positive': f'p{g}{l}'}) + '\n'
      for g in range(4) for l in ('en', 'de')))
  store = data.open_store({'name': 's', 'kind': 'jsonl', 'paths': [str(src)]},
                          tmp_path / 'stores')
  on_disk = sorted(str(p.relative_to(store.directory)) for p in
                   pathlib.Path(store.directory).rglob('*') if p.is_file())
  assert sorted([*store.meta['files'], 'meta.json']) == on_disk
  for rel, rec in store.meta['files'].items():
    assert rec == {'size': os.path.getsize(store.directory / rel),
                   'sha256': store_lib.file_digest(store.directory / rel)}
  assert store.meta['meta_sha256'] == store_lib.meta_digest(store.meta)
  assert store.meta['inputs'] == [{'path': str(src), 'size': os.path.getsize(src),
                                   'sha256': store_lib.file_digest(src)}]
  assert store.verify() == sum(r['size'] for r in store.meta['files'].values())


def test_components_match_a_plain_union_find():
  rng = np.random.default_rng(0)
  n = 500
  a, b = rng.integers(0, n, 300), rng.integers(0, n, 300)
  parent = list(range(n))

  def find(x):
    while parent[x] != x:
      x = parent[x]
    return x

  for x, y in zip(a, b):
    parent[find(x)] = find(y)
  comp = store_lib.components(n, a, b)
  for i in range(n):
    for j in (rng.integers(0, n, 20)):
      assert (comp[i] == comp[j]) == (find(i) == find(j))
  assert all(comp[i] == min(k for k in range(n) if find(k) == find(i)) for i in range(0, n, 37))
