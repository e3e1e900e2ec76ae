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
  tfds     a prepared TensorFlow Datasets dataset (per-language configs linked by a group id
           feature), its features mapped to query, positive, language, group id and
           negatives (hybrid_ir.data.tfds).

A source's store is `<store_dir>/<name>-<fingerprint>` (`store_path`): the fingerprint is of
the input files' contents, settings and kind, not their paths, so the same files reached
through a symlink, another checkout or another mount share one store, and other files get
another. The name must be a plain folder name.
"""
import importlib
import logging
import os
from typing import Any

from etils import epath

from hybrid_ir import config_flags
from hybrid_ir.data import store as store_lib

# kind -> module, as `hybrid_ir.evaluators.TYPES` (type -> module). A new kind: a module with
# `inputs`, `settings` and `prepare`, and one line here.
KINDS = {'squad': 'hybrid_ir.data.squad', 'mmarco': 'hybrid_ir.data.mmarco',
         'jsonl': 'hybrid_ir.data.jsonl', 'bitext': 'hybrid_ir.data.bitext',
         'tatoeba': 'hybrid_ir.data.bitext', 'tfds': 'hybrid_ir.data.tfds'}
DEFAULT_STORE_DIR = os.environ.get(
    'HYBRID_IR_STORES', os.path.join(os.path.expanduser('~'), '.cache', 'hybrid_ir', 'stores'))
# Each input file's sha256 by (real path, size, mtime, ctime, inode), so that finding a store by
# its sources' contents reads only files that changed: in the stores' folder, or, where that is
# remote (shared by a pod's hosts, whose files differ in inode and ctime), in this host's cache.
DIGEST_CACHE = 'input_digests.json'
LOCAL_CACHE_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'hybrid_ir')


def source_module(kind: str):
  """The module that prepares sources of `kind`."""
  if kind not in KINDS:
    raise ValueError(f'training source kind {kind!r}; known: {sorted(KINDS)}')
  return importlib.import_module(KINDS[kind])


def source_name(cfg: Any) -> str:
  """The source's `name`, checked to be one folder name: it becomes part of a store's path."""
  name = cfg.get('name')
  if not name or not isinstance(name, str):
    raise ValueError(f'input.sources: a source needs a name; got {dict(cfg)}')
  if ('/' in name or '\\' in name or '..' in name or '\x00' in name or name.startswith('.')
      or os.path.isabs(name)):
    raise ValueError(f'input.sources: source name {name!r} must be a plain folder name (no '
                     "'/', '\\' or '..', not starting with '.'): it names the store's folder")
  return name


def _store_dir(store_dir: str | os.PathLike | None) -> epath.Path:
  return epath.Path(store_dir or DEFAULT_STORE_DIR)


def describe(cfg: Any, store_dir: str | os.PathLike | None = None) -> dict[str, Any]:
  """What a store of this source is made of: kind, parse settings, the input files (path, size,
  sha256; digests cached in `<store_dir>/input_digests.json`) and their content fingerprint."""
  source_name(cfg)
  kind = cfg.get('kind')
  module = source_module(kind)
  settings = module.settings(cfg)
  folder = _store_dir(store_dir)
  cache = (epath.Path(LOCAL_CACHE_DIR) if '://' in str(folder) else folder) / DIGEST_CACHE
  inputs = store_lib.file_fingerprints(module.inputs(cfg), cache)
  return {'kind': kind, 'settings': settings, 'inputs': inputs,
          'fingerprint': store_lib.content_fingerprint(kind, settings, inputs)}


def store_path(cfg: Any, store_dir: str | os.PathLike | None = None,
               described: dict[str, Any] | None = None) -> epath.Path:
  """`cfg.store` if given, else `<store_dir>/<name>-<fingerprint of the sources' contents>`:
  the same files reached through another path share a store, other files get another.
  `described` is `describe(cfg, store_dir)` where the caller has it already."""
  if cfg.get('store'):
    return epath.Path(cfg.get('store'))
  described = described or describe(cfg, store_dir)
  return _store_dir(store_dir) / f'{source_name(cfg)}-{described["fingerprint"]}'


def _what_differs(meta: dict, wanted: dict) -> str:
  """A short list of what differs between a store's meta and the sources a config names."""
  out = []
  if meta.get('kind') != wanted['kind']:
    out.append(f'kind {meta.get("kind")!r} -> {wanted["kind"]!r}')
  out += [f'{k} {then!r} -> {now!r}' for k, then, now in config_flags.differences(
      meta.get('settings') or {}, wanted['settings'], absent=None)]
  have = meta.get('inputs') or []
  if len(have) != len(wanted['inputs']):
    out.append(f'{len(have)} input files -> {len(wanted["inputs"])}')
  else:
    out += [f'content of {os.path.basename(w["path"])}' for h, w in zip(have, wanted['inputs'])
            if h.get('sha256') != w['sha256']]
  if meta.get('version') != store_lib.VERSION:
    out.append(f'store version {meta.get("version")} -> {store_lib.VERSION}')
  return ', '.join(out[:4] + ([f'{len(out) - 4} more'] if len(out) > 4 else [])) or 'unknown'


def _prepared_elsewhere(cfg: Any, store_dir: epath.Path, missing: FileNotFoundError
                        ) -> store_lib.Store:
  """The store of a source whose raw files are not on this host (a pod's training hosts read
  the stores from gs://): the one `<name>-*` store in `store_dir`, used as it was prepared."""
  name = source_name(cfg)
  if cfg.get('store'):
    path = epath.Path(cfg.get('store'))
    if not store_lib.is_complete(path):
      raise FileNotFoundError(f'source {name!r}: {missing}, and no prepared store at {path}')
  else:
    found = ([p for p in store_dir.glob(f'{name}-*') if store_lib.is_store(p)]
             if store_dir.is_dir() else [])
    if not found:
      raise FileNotFoundError(f'source {name!r}: {missing}, and no prepared store of it in '
                              f'{store_dir}')
    if len(found) > 1:
      raise store_lib.StoreError(
          f'source {name!r}: {missing}, and {store_dir} holds {len(found)} stores of it '
          f'({", ".join(sorted(p.name for p in found))}): name the one to use as the source\'s '
          '`store`')
    path = found[0]
  store = store_lib.Store(path)
  logging.warning('source %s: %s; using the store %s as prepared (from %s)', name, missing,
                  path, [i['path'] for i in store.meta.get('inputs', [])])
  return store


def open_store(cfg: Any, store_dir: str | os.PathLike | None = None, *, prepare: str = 'auto',
               overwrite: bool = False, workers: int | None = None) -> store_lib.Store:
  """The store of source `cfg`, prepared first when missing and `prepare` is 'auto'.

  Inputs: a source config; the stores' folder (default $HYBRID_IR_STORES or
  ~/.cache/hybrid_ir/stores), where the store is `<name>-<fingerprint>` unless `cfg.store`
  names one; prepare 'auto' | 'never'; overwrite (prepare again even if a store exists, replacing
  it: only a store is ever replaced); workers (processes for preparation; default all cores).
  Raises StoreError (one line) when the store is damaged, when something that is not a store
  stands at its path, or when an explicit `store` was prepared from other data than `cfg`
  names. Where the raw files are not on this host (a pod's training workers reading the store
  from gs://) the store is used as it was prepared.
  """
  if prepare not in ('auto', 'never'):
    raise ValueError(f"input.prepare must be 'auto' or 'never', got {prepare!r}")
  name = source_name(cfg)
  folder = _store_dir(store_dir)
  try:
    wanted = describe(cfg, folder)
  except FileNotFoundError as e:
    if overwrite:
      raise
    return _prepared_elsewhere(cfg, folder, e)
  path = store_path(cfg, folder, wanted)
  store_lib.remove_stale_temporaries(path.parent)
  if store_lib.is_complete(path) and not overwrite:
    store = store_lib.Store(path)
    if store.fingerprint != wanted['fingerprint']:
      raise store_lib.StoreError(
          f'source {name!r}: the store {path} was prepared from other data than the config '
          f'names ({_what_differs(store.meta, wanted)}); {store_lib.PREPARE_AGAIN}, or drop the '
          "source's `store` so that each content gets its own")
    return store
  store_lib.check_replaceable(path)
  older = folder / name  # where stores were kept before they were keyed by content
  if not cfg.get('store') and store_lib.is_store(older):
    logging.warning('source %s: %s is a store where stores were kept before they were keyed by '
                    'content; this source no longer uses it (remove it to free its space)', name,
                    older)
  if prepare == 'never' and not overwrite:
    raise FileNotFoundError(f'source {name!r}: no prepared store at {path}; run '
                            '`python -m hybrid_ir.prepare --config <config>` first (input.prepare'
                            " is 'never')")
  builder = store_lib.Builder(path, kind=wanted['kind'], name=name, settings=wanted['settings'],
                              inputs=wanted['inputs'], overwrite=overwrite)
  try:
    return source_module(wanted['kind']).prepare(cfg, builder, workers or os.cpu_count() or 1)
  except BaseException:
    builder.abort()
    raise
