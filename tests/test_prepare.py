"""hybrid_ir.prepare: the library call (a summary per source, stores reused, --verify) and the
binary (usage, help, its console and log)."""
import json
import pathlib
import subprocess
import sys

import ml_collections
import pytest
from etils import epath

from hybrid_ir import prepare

REPO = pathlib.Path(__file__).resolve().parents[1]


def _records(path, groups, langs=('en', 'de')):
  path.write_text(''.join(json.dumps({'group_id': f'g{g}', 'lang': l, 'query': f'q {g} {l}',
                                      'positive': f'p {g} {l}'}) + '\n'
                          for g in range(groups) for l in langs))
  return str(path)


def _config(tmp_path):
  c = ml_collections.ConfigDict()
  c.input = dict(store_dir=str(tmp_path / 'stores'), sources=[
      dict(name='a', kind='jsonl', paths=[_records(tmp_path / 'a.jsonl', 5)]),
      dict(name='b', kind='jsonl', paths=[_records(tmp_path / 'b.jsonl', 3, ('fr',))])])
  return c


def test_one_summary_per_source_and_a_prepared_store_is_reused(tmp_path, capsys):
  config = _config(tmp_path)
  rows = prepare.prepare(config, workers=1)
  assert [(r['source'], r['kind'], r['groups'], r['langs']) for r in rows] == [
      ('a', 'jsonl', 5, ['de', 'en']), ('b', 'jsonl', 3, ['fr'])]
  for r in rows:
    assert pathlib.Path(r['store']).parent == tmp_path / 'stores'
    assert r['bytes'] == prepare.store_bytes(epath.Path(r['store'])) > 0
  assert [json.loads(l) for l in capsys.readouterr().out.splitlines()] == rows
  mtime = (pathlib.Path(rows[0]['store']) / 'meta.json').stat().st_mtime_ns
  again = prepare.prepare(config, verify=True, workers=1)
  assert [r['store'] for r in again] == [r['store'] for r in rows]
  assert (pathlib.Path(rows[0]['store']) / 'meta.json').stat().st_mtime_ns == mtime
  for r in again:  # --verify reads every file of the store
    files = [p for p in pathlib.Path(r['store']).rglob('*') if p.is_file()]
    assert 0 < r['verified_bytes'] <= sum(p.stat().st_size for p in files)


def _binary(*args):
  return subprocess.run([sys.executable, '-m', 'hybrid_ir.prepare', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_binary_usage_help_console_and_log(tmp_path):
  out = _binary('--overwrite')
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert ('--config is required (the config whose input.sources to prepare, e.g. --config '
          'configs/demo.py)') in out.stderr
  out = _binary('--help')
  assert out.returncode == 0
  assert '<input.store_dir>/<name>-<fingerprint>' in out.stdout + out.stderr
  config = tmp_path / 'config.py'
  source = dict(name='a', kind='jsonl', paths=[_records(tmp_path / 'a.jsonl', 4)])
  config.write_text('import ml_collections\n'
                    'def get_config():\n'
                    '  c = ml_collections.ConfigDict()\n'
                    f'  c.input = dict(store_dir={str(tmp_path / "stores")!r}, '
                    f'sources=[{source!r}])\n'
                    '  return c\n')
  out = _binary(f'--config={config}', '--workers=1')
  assert out.returncode == 0, out.stderr
  (row,) = [json.loads(l) for l in out.stdout.splitlines()]  # the console: one line per source
  assert (row['source'], row['groups']) == ('a', 4)
  assert (tmp_path / 'stores' / 'prepare.INFO').is_file()
  # Bad input: one line naming the file and line, no traceback on the console.
  pathlib.Path(source['paths'][0]).write_text('{"group_id": "g0", "lang": "en"}\n')
  out = _binary(f'--config={config}', '--workers=1')
  assert out.returncode == 1 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(
      f"hybrid_ir.prepare: error: {source['paths'][0]}:1: field 'query' must be")


@pytest.mark.parametrize('content', ['', '{}'])
def test_store_bytes_of_an_empty_folder_is_zero(tmp_path, content):
  (tmp_path / 'texts').mkdir()
  (tmp_path / 'index').mkdir()
  if content:
    (tmp_path / 'meta.json').write_text(content)
  assert prepare.store_bytes(epath.Path(tmp_path)) == len(content)
