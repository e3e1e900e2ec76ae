"""hybrid_ir.data, the sources' registry: open_store finds a source's store by its content and
kind (describe, store_path), refuses an explicit store of other data in one line, uses a store
as prepared where the raw files are absent, leaves nothing half-made when preparation dies, and
names an unknown kind or a missing file. Each kind's own tests: test_squad, test_mmarco,
test_jsonl, test_bitext, test_tfds."""
import os

import pytest

from hybrid_ir import data
from hybrid_ir.data import store as store_lib

from store_helpers import jsonl_file, jsonl_record, prep  # tests/store_helpers.py


def test_stores_are_keyed_by_content_and_an_explicit_store_of_other_data_is_refused(tmp_path):
  path = jsonl_file(tmp_path, [jsonl_record('a', 'en'), jsonl_record('b', 'en')])
  first = prep(tmp_path, kind='jsonl', paths=[path], name='j')
  assert first.directory == tmp_path / 'stores' / f'j-{first.fingerprint}'
  # Other settings make another store; the first stays.
  other = prep(tmp_path, kind='jsonl', paths=[path], name='j', max_bad_lines=3)
  assert other.directory != first.directory and store_lib.is_store(first.directory)
  # A fresh copy of the same bytes (only the mtime is new) is the same data: the same store,
  # with the fingerprint a checkpoint's input state is checked against.
  os.utime(path, (1, 1))
  again = prep(tmp_path, kind='jsonl', paths=[path], name='j')
  assert again.directory == first.directory and again.fingerprint == first.fingerprint
  # New content of the same size and mtime is other data: another store.
  text = open(path).read()
  open(path, 'w').write(text.replace('"a"', '"c"', 1))
  os.utime(path, (1, 1))
  changed = prep(tmp_path, kind='jsonl', paths=[path], name='j')
  assert changed.fingerprint != first.fingerprint and changed.directory != first.directory
  # An explicit store is used whatever its content, but one of other data is refused in one
  # short line that says what differs and how to rebuild it.
  explicit = tmp_path / 'my_store'
  prep(tmp_path, kind='jsonl', paths=[path], store=str(explicit))
  open(path, 'w').write(text)
  with pytest.raises(store_lib.StoreError) as e:
    prep(tmp_path, kind='jsonl', paths=[path], store=str(explicit))
  msg = str(e.value)
  assert '\n' not in msg and len(msg) < 400, msg
  assert f'the store {explicit} was prepared from other data' in msg and 'content of r.jsonl' in msg
  assert 'python -m hybrid_ir.prepare --config <config> --overwrite' in msg
  # Prepared again from the same contents elsewhere, a store has the same fingerprint.
  moved = tmp_path / 'moved.jsonl'
  os.rename(path, moved)
  assert prep(tmp_path, kind='jsonl', paths=[str(moved)], name='k').fingerprint == first.fingerprint
  # A host without the raw files uses the store as prepared: an explicit one, or the one store
  # of that name in the store folder; several are named, for the user to choose.
  assert prep(tmp_path, kind='jsonl', paths=[path], store=str(explicit)).num_groups == 2
  assert prep(tmp_path, kind='jsonl', paths=[path], name='k').directory.name.startswith('k-')
  with pytest.raises(store_lib.StoreError, match=r"holds 3 stores of it \(j-.*name the one"):
    prep(tmp_path, kind='jsonl', paths=[path], name='j')


def test_preparation_that_dies_leaves_nothing_training_would_read(tmp_path, monkeypatch):
  path = jsonl_file(tmp_path, [jsonl_record('a', 'en'), jsonl_record('b', 'en')])
  cfg = dict(name='j', kind='jsonl', paths=[path])
  target = data.store_path(cfg, tmp_path / 'stores')

  def dies(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(store_lib.Builder, 'finish', dies)
  with pytest.raises(KeyboardInterrupt):
    data.open_store(cfg, tmp_path / 'stores')
  # Nothing but the input digests' cache: no store, no temporary folder.
  assert not target.exists()
  assert [p.name for p in (tmp_path / 'stores').iterdir()] == [data.DIGEST_CACHE]
  # A folder left by kill -9 (no meta.json) is never read as a store.
  (target / 'texts').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='not a complete store'):
    store_lib.Store(target)
  monkeypatch.undo()
  with pytest.raises(FileNotFoundError, match="prepare' is 'never'|no prepared store"):
    data.open_store(cfg, tmp_path / 'stores', prepare='never')
  assert data.open_store(cfg, tmp_path / 'stores').num_groups == 2


def test_unknown_kind_and_missing_file(tmp_path):
  with pytest.raises(ValueError, match=r"kind 'csv'; known: \['bitext', 'jsonl', 'mmarco'"):
    prep(tmp_path, kind='csv')
  with pytest.raises(FileNotFoundError, match='training source file not found: .*nope.jsonl'):
    prep(tmp_path, kind='jsonl', paths=[str(tmp_path / 'nope.jsonl')])
