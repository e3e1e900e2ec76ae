"""Helpers of the data tests (test_data, test_squad, test_mmarco, test_jsonl, test_bitext): a
source prepared into a fresh store, a group's rows, and small input files written in place."""
import gzip
import itertools
import json

from hybrid_ir import data

_NAMES = itertools.count()


def prep(tmp_path, **cfg):
  """data.open_store(cfg) into <tmp_path>/stores with one worker: a fresh store unless the test
  names one."""
  cfg.setdefault('name', f'src{next(_NAMES)}')
  return data.open_store(cfg, tmp_path / 'stores', workers=1)


def rows_of(store, lang, group):
  """(query row, positive row) of `group` in `lang`; (-1, -1) where the group has no `lang`."""
  idx = store.index(lang)
  return int(idx.group_query[group]), int(idx.group_positive[group])


def write_lines(path, lines, gz=False):
  """Writes `lines` (each with a newline; UTF-8, gzipped with gz) to `path`, making its folder;
  returns the path as a string."""
  path.parent.mkdir(parents=True, exist_ok=True)
  text = ''.join(l + '\n' for l in lines)
  if gz:
    with gzip.open(path, 'wt', encoding='utf-8') as f:
      f.write(text)
  else:
    path.write_text(text, encoding='utf-8')
  return str(path)


def jsonl_file(tmp_path, records):
  """<tmp_path>/r.jsonl with one line per record (a dict as JSON, a string as it is)."""
  path = tmp_path / 'r.jsonl'
  path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in records))
  return str(path)


def jsonl_record(g, lang, **kw):
  """A jsonl source record of group `g` in `lang`, its query and positive named after both."""
  return dict(group_id=g, lang=lang, query=f'q {g} {lang}', positive=f'p {g} {lang}', **kw)
