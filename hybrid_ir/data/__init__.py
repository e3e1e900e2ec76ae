"""Training sources, by kind: each prepares its raw files into a store (`hybrid_ir.data.store`).

A source config (an entry of `config.input.sources`) has `name`, `kind` and the kind's own
fields; `langs` (the languages to train on; default all), `num_negatives` (hard negatives per
example; default 0) and `store` (an explicit store directory) are read by the input pipeline,
not by the preparation. The kinds, one module each, every module exposing
`inputs(cfg) -> [paths]`, `settings(cfg) -> dict` and `prepare(cfg, builder, workers) -> Store`:

  squad    SQuAD-format translated QA: a folder of <lang>.json (or `files` {lang: path});
           question ids shared across languages form the groups (hybrid_ir.data.squad).
  mmarco   mMARCO as distributed: per language a passage collection and training queries,
           and one id triples file (hybrid_ir.data.mmarco).
  jsonl    one JSON record per line (hybrid_ir.data.jsonl).
  bitext   id<TAB>lang<TAB>text files, same id = translations (hybrid_ir.data.bitext).
  tatoeba  the Tatoeba test sets' aligned <xxx>/eng line files (hybrid_ir.data.bitext).
"""
import importlib
import json
import logging
import os
from typing import Any

from etils import epath

from hybrid_ir.data import store as store_lib

KINDS = {'squad': 'squad', 'mmarco': 'mmarco', 'jsonl': 'jsonl', 'bitext': 'bitext',
         'tatoeba': 'bitext'}
# Read by the input pipeline (which examples to draw), not by the preparation.
SELECTION_KEYS = ('name', 'kind', 'langs', 'num_negatives', 'store')
DEFAULT_STORE_DIR = os.environ.get(
    'HYBRID_IR_STORES', os.path.join(os.path.expanduser('~'), '.cache', 'hybrid_ir', 'stores'))


def source_module(kind: str):
  """The module that prepares sources of `kind`."""
  if kind not in KINDS:
    raise ValueError(f'training source kind {kind!r}; known: {sorted(KINDS)}')
  return importlib.import_module(f'hybrid_ir.data.{KINDS[kind]}')


def describe(cfg: Any) -> dict[str, Any]:
  """What a store of this source is made of: kind, parse settings and input file stats."""
  name, kind = cfg.get('name'), cfg.get('kind')
  if not name:
    raise ValueError(f'input.sources: a source needs a name; got {dict(cfg)}')
  module = source_module(kind)
  return {'kind': kind, 'settings': module.settings(cfg),
          'inputs': store_lib.file_fingerprints(module.inputs(cfg))}


def store_path(cfg: Any, store_dir: str | os.PathLike | None = None) -> epath.Path:
  """`cfg.store` if given, else `<store_dir>/<name>`."""
  if cfg.get('store'):
    return epath.Path(cfg.get('store'))
  if not cfg.get('name'):
    raise ValueError(f'input.sources: a source needs a name; got {dict(cfg)}')
  return epath.Path(store_dir or DEFAULT_STORE_DIR) / cfg.get('name')


def _differences(saved: dict, wanted: dict, prefix: str = '') -> list[str]:
  out = []
  for k in sorted(set(saved) | set(wanted)):
    a, b = saved.get(k), wanted.get(k)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f'{prefix}{k}.')
    elif a != b:
      out.append(f'{prefix}{k}: store has {a!r}, config gives {b!r}')
  return out


def _reconcile_inputs(saved: list, wanted: list, name: str) -> list:
  """`wanted`'s inputs as the store would record them, for comparison with `saved`.

  A file whose path and size match but whose mtime does not (a fresh copy of the same data: a
  new VM, `gsutil cp`, a restored backup) counts as unchanged when its sha256 matches the one
  recorded at preparation; only then is it read.
  """
  out = []
  for i, w in enumerate(wanted):
    s = saved[i] if i < len(saved) else {}
    same_file = s.get('path') == w['path'] and s.get('size') == w['size']
    if same_file and s.get('mtime') == w['mtime']:
      w = dict(s)
    elif same_file and s.get('sha256'):
      digest = store_lib.file_digest(w['path'])
      if digest == s['sha256']:
        logging.info('source %s: %s has a new mtime but the content it was prepared from',
                     name, w['path'])
        w = dict(s)
      else:
        w = dict(w, sha256=digest)
    out.append(w)
  return out


def open_store(cfg: Any, store_dir: str | os.PathLike | None = None, *, prepare: str = 'auto',
               overwrite: bool = False, workers: int | None = None) -> store_lib.Store:
  """The store of source `cfg`, prepared first when missing and `prepare` is 'auto'.

  Inputs: a source config; the stores' folder (default $HYBRID_IR_STORES or
  ~/.cache/hybrid_ir/stores); prepare 'auto' | 'never'; overwrite (prepare again even if a
  store exists); workers (processes for preparation; default all cores).
  Raises ValueError listing the differences when an existing store was prepared from other
  files or settings than `cfg` names (a file with only a new mtime is compared by content).
  Where the raw files are not on this host (a pod's
  training workers reading the store from gs://) the store is used as it was prepared.
  """
  if prepare not in ('auto', 'never'):
    raise ValueError(f"input.prepare must be 'auto' or 'never', got {prepare!r}")
  path = store_path(cfg, store_dir)
  if store_lib.is_complete(path) and not overwrite:
    store = store_lib.Store(path)
    try:
      wanted = describe(cfg)
    except FileNotFoundError as e:
      # A training host of a pod reads the store from gs:// and need not hold the raw files.
      logging.warning('source %s: %s; using the store %s as prepared (from %s)', cfg.get('name'),
                      e, path, [i['path'] for i in store.meta.get('inputs', [])])
      return store
    saved = {k: store.meta.get(k) for k in wanted}
    wanted['inputs'] = _reconcile_inputs(saved['inputs'] or [], wanted['inputs'], cfg.get('name'))
    diff = _differences(json.loads(json.dumps(saved)), json.loads(json.dumps(wanted)))
    if diff:
      raise ValueError(f'source {cfg.get("name")!r}: the store {path} was prepared from other '
                       f'files or settings than the config names:\n  ' + '\n  '.join(diff) +
                       '\nprepare it again (python -m hybrid_ir.prepare --overwrite), or give '
                       'the source another name or `store`')
    return store
  wanted = describe(cfg)
  if prepare == 'never' and not overwrite:
    raise FileNotFoundError(f'source {cfg.get("name")!r}: no prepared store at {path}; run '
                            '`python -m hybrid_ir.prepare --config <config>` first (input.prepare'
                            " is 'never')")
  inputs = [dict(i, sha256=store_lib.file_digest(i['path'])) for i in wanted['inputs']]
  builder = store_lib.Builder(path, kind=wanted['kind'], name=cfg.get('name'),
                              settings=wanted['settings'], inputs=inputs,
                              overwrite=overwrite)
  try:
    return source_module(wanted['kind']).prepare(cfg, builder, workers or os.cpu_count() or 1)
  except BaseException:
    builder.abort()
    raise
