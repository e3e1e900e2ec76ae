"""Store faults, injected for real, and what a user sees instead of lost files or silent damage.

  1  something that is not a store at a store's path (a folder with a thesis.tex, a file, the
     data folder as the stores' folder, a source name with '../'): refused in one line naming
     the path; nothing of the user's is changed or deleted
  2  half-written stores (*.tmp-*): removed when their writer (this host) is gone, else named
  3  a damaged store (index bytes zeroed, a text file truncated or corrupted, an index file
     deleted, meta.json edited): one line naming the store and the file and
     `prepare --config <config> --overwrite`, which rebuilds it; reading errors of a text file
     are translated to the same line
  4  the same data under another path (a symlink, a copy) reuses its store; two checkouts with
     different data under one stores' folder never share one
  5  bad source records: invalid UTF-8 (file:line, within max_bad_lines), a language typo
     (its lines named), too few passages for the batch (the batch size that fits)
  6  two runs reading other bytes never log equal batch fingerprints
The stores live under each test's tmp_path.
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir import input_pipeline
from hybrid_ir import sampler as sampler_lib
from hybrid_ir.data import store as store_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
REBUILD = 'python -m hybrid_ir.prepare --config <config> --overwrite'


def write_jsonl(path, groups=20, langs=('en', 'de'), tag=''):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(json.dumps({
      'group_id': f'g{g}', 'lang': l, 'query': f'question {g} in {l}{tag}',
      'positive': f'answer {g} in {l}{tag}', 'negatives': [f'other {g} {l}{tag}']}) + '\n'
      for g in range(groups) for l in langs))
  return str(path)


def source(path, name='mine', **kw):
  return dict(name=name, kind='jsonl', paths=[str(path)], **kw)


def snapshot(folder):
  """Every file under `folder` with its bytes: what the user had."""
  folder = pathlib.Path(folder)
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*'))
          if p.is_file()}


def assert_one_line(message, *must_name):
  assert '\n' not in message and len(message) < 600, message
  for part in must_name:
    assert str(part) in message, (part, message)


# --- 1: something else at a store's path ---

def user_folder(tmp_path):
  folder = tmp_path / 'thesis'
  (folder / 'notes').mkdir(parents=True)
  (folder / 'thesis.tex').write_text('\\documentclass{article} months of work')
  (folder / 'notes' / 'ideas.md').write_text('# ideas')
  return folder


@pytest.mark.parametrize('overwrite', [False, True])
def test_a_user_folder_or_file_at_the_store_path_is_refused_and_kept(tmp_path, overwrite):
  src = write_jsonl(tmp_path / 'data' / 'r.jsonl')
  folder = user_folder(tmp_path)
  before = snapshot(tmp_path)
  with pytest.raises(store_lib.StoreError) as e:
    data.open_store(source(src, store=str(folder)), tmp_path / 'stores', overwrite=overwrite)
  assert_one_line(str(e.value), folder, 'not a hybrid_ir store', 'nothing there was changed')
  a_file = tmp_path / 'thesis' / 'thesis.tex'
  with pytest.raises(store_lib.StoreError) as e:
    data.open_store(source(src, store=str(a_file)), tmp_path / 'stores', overwrite=overwrite)
  assert_one_line(str(e.value), a_file, 'is a file')
  # A folder of the user's with a meta.json of its own is no store either.
  (folder / 'meta.json').write_text('{"format": "my notes"}')
  before['thesis/meta.json'] = (folder / 'meta.json').read_bytes()
  with pytest.raises(store_lib.StoreError) as e:
    data.open_store(source(src, store=str(folder)), tmp_path / 'stores', overwrite=overwrite)
  assert_one_line(str(e.value), folder, 'not a hybrid_ir store')
  after = snapshot(tmp_path)
  assert {k: v for k, v in after.items() if not k.startswith('stores/')} == before
  assert not list(tmp_path.glob('**/*.tmp-*'))


def test_source_names_that_are_paths_are_refused(tmp_path):
  src = write_jsonl(tmp_path / 'data' / 'r.jsonl')
  victim = user_folder(tmp_path)
  before = snapshot(tmp_path)
  for name in ('../thesis', 'x/../../thesis', str(victim), '..', 'a\\b', '.hidden'):
    with pytest.raises(ValueError) as e:
      data.open_store(source(src, name=name), tmp_path / 'stores' / 'in', overwrite=True)
    assert_one_line(str(e.value), repr(name), 'plain folder name')
  assert snapshot(tmp_path) == before


def prepare_binary(tmp_path, config_py, *flags, env=None):
  config = tmp_path / 'config.py'
  config.write_text(config_py)
  return subprocess.run([sys.executable, '-m', 'hybrid_ir.prepare', f'--config={config}', *flags],
                        cwd=REPO, env=dict(os.environ, **(env or {})), capture_output=True,
                        text=True, timeout=300)


def config_py(sources, store_dir=None):
  return ('import ml_collections\n'
          'def get_config():\n'
          '  c = ml_collections.ConfigDict()\n'
          f'  c.input = dict(batch_size=8, store_dir={store_dir!r}, sources={sources!r})\n'
          '  return c\n')


def test_stores_folder_at_the_data_folder_deletes_nothing(tmp_path):
  # The case: HYBRID_IR_STORES is the data folder, and a source is named like a folder
  # of it (xquad-r). Preparing, and preparing again with --overwrite, keeps every file.
  data_dir = tmp_path / 'data'
  (data_dir / 'xquad-r').mkdir(parents=True)
  (data_dir / 'xquad-r' / 'de.json').write_text('{"version": "1.1", "data": []}')
  (data_dir / 'thesis.tex').write_text('months of work')
  src = write_jsonl(data_dir / 'r.jsonl')
  before = snapshot(data_dir)
  cfg = config_py([source(src, name='xquad-r')])
  for flags in ((), ('--overwrite',), ('--verify',)):
    out = prepare_binary(tmp_path, cfg, *flags, env={'HYBRID_IR_STORES': str(data_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
  after = snapshot(data_dir)
  assert {k: v for k, v in after.items() if k in before} == before
  row = json.loads(out.stdout.strip().splitlines()[-1])
  assert row['store'].startswith(str(data_dir / 'xquad-r-')) and row['verified_bytes'] > 0
  # A source whose explicit store is the data folder itself is refused, naming it.
  out = prepare_binary(tmp_path, config_py([source(src, name='x', store=str(data_dir))]))
  assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith(
      f'hybrid_ir.prepare: error: {data_dir} is a folder that is not a hybrid_ir store')
  assert {k: v for k, v in snapshot(data_dir).items() if k in before} == before


# --- 2: half-written stores ---

def test_half_written_stores_of_dead_writers_are_removed_and_others_named(tmp_path, caplog):
  src = write_jsonl(tmp_path / 'r.jsonl')
  stores = tmp_path / 'stores'
  path = data.store_path(source(src), stores)
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()

  def half_written(suffix, writer):
    tmp = pathlib.Path(f'{path}.tmp-{suffix}')
    (tmp / 'texts').mkdir(parents=True)
    (tmp / 'texts' / 'en.array_record').write_bytes(b'x' * 100)
    if writer:
      (tmp / store_lib.WRITER).write_text(json.dumps(dict(
          {'format': 'hybrid_ir.store.writer', 'started': 0}, **writer)))
    return tmp
  gone = half_written('dead', {'host': socket.gethostname(), 'pid': dead.pid})
  live = half_written('live', {'host': socket.gethostname(), 'pid': os.getpid()})
  elsewhere = half_written('other', {'host': 'another-host', 'pid': 1})
  unknown = half_written('older', None)
  with caplog.at_level('WARNING'):
    store = data.open_store(source(src), stores)
  assert store.num_groups == 20
  assert not gone.exists() and live.exists() and elsewhere.exists() and unknown.exists()
  logged = caplog.text
  assert f'removed {gone}' in logged
  for kept in (live, elsewhere, unknown):
    assert str(kept) in logged


# --- 3: damaged stores ---

def zero_index_bytes(store):
  path = store.directory / 'index' / 'en.group_positive.npy'
  raw = bytearray(path.read_bytes())
  mid = len(raw) // 2
  raw[mid - 50:mid + 50] = bytes(100)
  path.write_bytes(bytes(raw))
  return 'index/en.group_positive.npy', 'does not match the sha256'


def truncate_text(store):
  path = store.directory / 'texts' / 'de.array_record'
  raw = path.read_bytes()
  path.write_bytes(raw[:len(raw) // 2])
  return 'texts/de.array_record', 'bytes'


def delete_index(store):
  os.remove(store.directory / 'index' / 'en.negative_rows.npy')
  return 'index/en.negative_rows.npy', 'is missing'


def edit_meta(store):
  path = store.directory / 'meta.json'
  meta = json.loads(path.read_text())
  meta['num_groups'] = 19
  path.write_text(json.dumps(meta))
  return 'meta.json', 'was changed after preparation'


def garble_meta(store):
  path = store.directory / 'meta.json'
  path.write_text(path.read_text()[:100])
  return 'meta.json', 'is not a JSON object'


def corrupt_small_text(store):
  path = store.directory / 'texts' / 'en.array_record'
  raw = bytearray(path.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  path.write_bytes(bytes(raw))
  return 'texts/en.array_record', 'does not match the sha256'


@pytest.mark.parametrize('damage', [zero_index_bytes, truncate_text, delete_index, edit_meta,
                                    garble_meta, corrupt_small_text])
def test_a_damaged_store_is_one_message_and_prepare_overwrite_rebuilds_it(tmp_path, damage):
  src = write_jsonl(tmp_path / 'r.jsonl')
  clean = data.open_store(source(src), tmp_path / 'stores')
  digest, fingerprint = clean.content_digest, clean.fingerprint
  rel, problem = damage(clean)
  with pytest.raises(store_lib.StoreError) as e:
    data.open_store(source(src), tmp_path / 'stores')
  assert_one_line(str(e.value), f'store {clean.directory}: {rel}', problem, REBUILD)
  # The training path sees the same message.
  with pytest.raises(store_lib.StoreError, match='prepare it again'):
    input_pipeline.open_sources({'store_dir': str(tmp_path / 'stores'), 'batch_size': 8,
                                 'sources': [source(src)]})
  rebuilt = data.open_store(source(src), tmp_path / 'stores', overwrite=True)
  assert rebuilt.directory == clean.directory
  assert (rebuilt.content_digest, rebuilt.fingerprint) == (digest, fingerprint)
  assert data.open_store(source(src), tmp_path / 'stores').verify() > 0
  assert not list((tmp_path / 'stores').glob('*.tmp-*')) and not list(
      (tmp_path / 'stores').glob('*.old-*'))


def toy_tokenize(texts, kind):
  del kind
  return {'input_ids': np.array([[len(t), 1] for t in texts], np.int32)}


def test_a_corrupted_large_text_file_is_named_when_read_and_by_verify(tmp_path, monkeypatch):
  # Texts too large to be hashed at every start are checked by size when a store is opened;
  # damage of the same size is caught by riegeli's chunk hashes when read, and by --verify.
  monkeypatch.setattr(store_lib, 'CACHE_TEXTS_BELOW_BYTES', 0)
  path = tmp_path / 'r.jsonl'
  path.write_text(''.join(json.dumps({
      'group_id': f'g{g}', 'lang': l, 'query': f'question {g} {l} ' * 30,
      'positive': f'answer {g} {l} ' * 40}) + '\n' for g in range(40) for l in ('en', 'de')))
  store = data.open_store(source(path), tmp_path / 'stores')
  text = store.directory / 'texts' / 'en.array_record'
  raw = bytearray(text.read_bytes())
  mid = len(raw) // 2
  raw[mid - 50:mid + 50] = bytes(100)
  text.write_bytes(bytes(raw))
  config = {'batch_size': 8, 'seed': 0, 'store_dir': str(tmp_path / 'stores'),
            'type_probs': {'mono': 1.0}, 'sources': [source(path)]}
  pipeline = input_pipeline.make_pipeline(config, toy_tokenize, process_index=0, process_count=1)
  with pytest.raises(store_lib.StoreError) as e:
    for _ in range(4):
      next(pipeline)
  pipeline.close()
  assert_one_line(str(e.value), f'store {store.directory}: texts/en.array_record cannot be read',
                  'Corrupted Riegeli', REBUILD)
  with pytest.raises(store_lib.StoreError) as e:
    store_lib.Store(store.directory).verify()
  assert_one_line(str(e.value), 'texts/en.array_record does not match the sha256', REBUILD)


def test_prepare_verify_names_the_damaged_file(tmp_path):
  src = write_jsonl(tmp_path / 'r.jsonl')
  cfg = config_py([source(src)], store_dir=str(tmp_path / 'stores'))
  assert prepare_binary(tmp_path, cfg).returncode == 0
  store = data.open_store(source(src), tmp_path / 'stores')
  zero_index_bytes(store)
  out = prepare_binary(tmp_path, cfg, '--verify')
  assert out.returncode == 1
  last = out.stderr.strip().splitlines()[-1]
  assert_one_line(last, 'hybrid_ir.prepare: error: store', 'index/en.group_positive.npy', REBUILD)
  assert 'Traceback' not in out.stderr
  assert prepare_binary(tmp_path, cfg, '--overwrite', '--verify').returncode == 0


def test_an_older_store_version_says_prepare_again(tmp_path):
  src = write_jsonl(tmp_path / 'r.jsonl')
  store = data.open_store(source(src, store=str(tmp_path / 'old')), tmp_path / 'stores')
  meta = json.loads((store.directory / 'meta.json').read_text())
  meta['version'] = 1
  (store.directory / 'meta.json').write_text(json.dumps(meta))
  with pytest.raises(store_lib.StoreError) as e:
    data.open_store(source(src, store=str(tmp_path / 'old')), tmp_path / 'stores')
  assert_one_line(str(e.value), 'version 1; this code reads version 2', REBUILD)
  again = data.open_store(source(src, store=str(tmp_path / 'old')), tmp_path / 'stores',
                          overwrite=True)
  assert again.meta['version'] == store_lib.VERSION


# --- 4: the same data elsewhere; two checkouts ---

def test_the_same_data_under_another_path_reuses_the_store(tmp_path, monkeypatch):
  src = write_jsonl(tmp_path / 'checkout' / 'shared' / 'data' / 'r.jsonl')
  first = data.open_store(source(src), tmp_path / 'stores')

  def no_preparation(*args, **kwargs):
    raise AssertionError('prepared again')
  monkeypatch.setattr(store_lib.Builder, '__init__', no_preparation)
  link = tmp_path / 'elsewhere'
  link.symlink_to(tmp_path / 'checkout' / 'shared' / 'data')
  copy = tmp_path / 'new_vm' / 'r.jsonl'
  copy.parent.mkdir()
  shutil.copy(src, copy)  # a new mtime, the same bytes
  for path in (link / 'r.jsonl', copy):
    again = data.open_store(source(path), tmp_path / 'stores')
    assert again.directory == first.directory and again.fingerprint == first.fingerprint


def test_two_checkouts_with_different_data_do_not_collide(tmp_path):
  stores = tmp_path / 'stores'  # one machine's default stores' folder
  a = write_jsonl(tmp_path / 'checkout_a' / 'data' / 'r.jsonl')
  b = write_jsonl(tmp_path / 'checkout_b' / 'data' / 'r.jsonl', tag=' (v2)')
  store_a = data.open_store(source(a), stores)
  store_b = data.open_store(source(b), stores)
  assert store_a.directory != store_b.directory
  assert store_a.texts('en', [0]) != store_b.texts('en', [0])
  # Each checkout keeps training on its own: the first's store is still there and intact.
  again = data.open_store(source(a), stores)
  assert again.directory == store_a.directory and again.verify() > 0
  assert sorted(p.name for p in stores.iterdir() if p.is_dir()) == sorted(
      [store_a.directory.name, store_b.directory.name])


# --- 5: bad records ---

def test_invalid_utf8_is_named_by_file_and_line_and_counted_by_max_bad_lines(tmp_path):
  path = pathlib.Path(write_jsonl(tmp_path / 'r.jsonl'))
  lines = path.read_bytes().split(b'\n')
  lines[2] = lines[2].replace(b'question', b'qu\xff\xfestion')
  path.write_bytes(b'\n'.join(lines))
  with pytest.raises(ValueError) as e:
    data.open_store(source(path), tmp_path / 'stores')
  assert_one_line(str(e.value), f'{path}:3: invalid UTF-8')
  store = data.open_store(source(path, max_bad_lines=1), tmp_path / 'stores')
  assert store.meta['counts']['bad lines (skipped)'] == 1
  assert store.meta['counts']['first bad lines'] == [f'{path}:3']
  # The same in a bitext source.
  tsv = tmp_path / 'b.tsv'
  tsv.write_bytes(b'id\tlang\ttext\n' + b''.join(
      b'v%d\t%s\ttext %d\n' % (i, l, i) for i in range(20) for l in (b'en', b'de'))
      + b'v99\ten\tbad \xff\n')
  with pytest.raises(ValueError, match=f'{tsv}:42: invalid UTF-8'):
    data.open_store(dict(name='b', kind='bitext', paths=[str(tsv)]), tmp_path / 'stores')
  assert data.open_store(dict(name='b', kind='bitext', paths=[str(tsv)], max_bad_lines=1),
                         tmp_path / 'stores').num_groups == 20


def test_a_language_typo_is_an_error_naming_its_lines(tmp_path):
  path = pathlib.Path(write_jsonl(tmp_path / 'r.jsonl', groups=60, langs=('en', 'de', 'es')))
  lines = path.read_text().split('\n')
  lines[28] = lines[28].replace('"lang": "de"', '"lang": "dee"')
  assert '"dee"' in lines[28]
  path.write_text('\n'.join(lines))
  with pytest.raises(ValueError) as e:
    data.open_store(source(path), tmp_path / 'stores')
  assert_one_line(str(e.value), "'dee' in 1 record(s)", f'{path}:29', 'min_lang_share=0')
  store = data.open_store(source(path, min_lang_share=0), tmp_path / 'stores')
  assert 'dee' in store.langs


def test_too_few_passages_for_the_batch_suggests_the_batch_size_that_fits(tmp_path):
  store = data.open_store(source(write_jsonl(tmp_path / 'r.jsonl', groups=12)),
                          tmp_path / 'stores')
  src = sampler_lib.make_source('mine', store, {}, 0)
  with pytest.raises(ValueError) as e:
    sampler_lib.Sampler({'mine': src}, {'batch_size': 32, 'type_probs': {'mono': 1.0}})
  assert_one_line(str(e.value), 'no pair left', 'input.batch_size <= 12', 'batch=N')
  sampler_lib.Sampler({'mine': src}, {'batch_size': 12, 'type_probs': {'mono': 1.0}})


# --- 6: batch fingerprints cover the bytes read ---

def fingerprints(store, steps=5):
  src = sampler_lib.make_source('mine', store, {'num_negatives': 1}, 0)
  s = sampler_lib.Sampler({'mine': src}, {'batch_size': 8, 'seed': 0,
                                          'type_probs': {'mono': .5, 'cross': .5}})
  return [sampler_lib.batch_fingerprint(s.next_batch()) for _ in range(steps)]


def test_runs_on_other_bytes_never_log_equal_batch_fingerprints(tmp_path):
  same_a = data.open_store(source(write_jsonl(tmp_path / 'a' / 'r.jsonl')), tmp_path / 's1')
  same_b = data.open_store(source(write_jsonl(tmp_path / 'b' / 'r.jsonl')), tmp_path / 's2')
  other = data.open_store(source(write_jsonl(tmp_path / 'c' / 'r.jsonl', tag='!')),
                          tmp_path / 's1')
  assert same_a.directory != same_b.directory
  # The same bytes prepared twice: the same batches, the same fingerprints.
  assert fingerprints(same_a) == fingerprints(same_b)
  # Other texts behind the same group ids and languages: every fingerprint differs.
  assert not set(fingerprints(same_a)) & set(fingerprints(other))
