"""TensorFlow Datasets -> a training store: any prepared TFDS dataset as a training source.

Source config:
  dataset   the TFDS name, with its config if it has one: 'xquad/de', 'my_dataset'
  configs   instead of a config in `dataset`: {lang: config} for per-language datasets, e.g.
            {'de': 'de', 'es': 'es'} with dataset='xquad' reads 'xquad/de' and 'xquad/es' and
            gives their records those languages; the group id field links their translations
  split     default 'train' (any TFDS split spec, 'train[:90%]')
  data_dir  where the dataset was prepared (default TFDS's, ~/tensorflow_datasets); never
            downloaded here: prepare it first with `tfds build` or
            `tfds.builder(...).download_and_prepare()`
  fields    {role: feature}: query, positive, group_id (required); lang (unless `configs` or
            `lang` gives it), negatives (a sequence of texts), positive_id (optional). A feature
            of a nested dict is named with dots: 'answers.text'; a sequence feature gives its
            first element for a text role (e.g. SQuAD's 'answers.text' as the positive).
  lang      one language for every record (a single-language dataset without a lang feature)
  min_lang_share   as for jsonl (default 0.01)

Each example becomes the jsonl kind's record (`hybrid_ir.data.jsonl`: group_id, lang, query,
positive, optional negatives and positive_id) and is checked and written the same way, so
training cannot tell the kinds apart. Records are named `<dataset>/<config>:<split>[i]` in
errors. The store is keyed by the prepared dataset's files (their sizes and sha256s), the
source's settings and the kind.

Never train on the evaluation sets: LAReQA's XQuAD-R and MLQA-R are built from XQuAD and from
MLQA's dev and test sets, so a `xquad` or `mlqa` source with their validation or test split
trains on the questions and answers the evaluation asks (so does SQuAD v1.1's validation split,
which holds XQuAD's paragraphs). Such a source is refused (`check_evaluation_data`) unless it
sets `allow_evaluation_data=True`, for a model that is never evaluated on XQuAD-R or MLQA-R.

Recommended for: data kept as TFDS builders (the catalog's squad, tydi_qa, xquad, mlqa; the
community's huggingface: datasets; your own builders). Related: hybrid_ir.data.jsonl.
"""
import collections
import os
from typing import Any

import numpy as np

from hybrid_ir.data import jsonl
from hybrid_ir.data import store as store_lib

ROLES = ('query', 'positive', 'group_id', 'lang', 'negatives', 'positive_id')
# TFDS catalog splits that LAReQA's evaluation sets are built from: XQuAD-R is XQuAD (itself
# 240 paragraphs of SQuAD v1.1 dev), MLQA-R is MLQA's dev and test.
EVALUATION_DATA = {'xquad': ('test', 'validation'), 'mlqa': ('validation', 'test'),
                   'squad': ('validation',)}


def _datasets(cfg: Any) -> list[tuple[str | None, str]]:
  """[(lang or None, 'name/config')] that the source reads."""
  dataset = cfg.get('dataset')
  if not dataset or not isinstance(dataset, str):
    raise ValueError(f'source {cfg.get("name")!r} (tfds) needs `dataset`, a TFDS name such as '
                     "'xquad/de' or 'my_dataset'")
  configs = cfg.get('configs')
  if configs:
    if '/' in dataset:
      raise ValueError(f'source {cfg.get("name")!r} (tfds): give the config in `dataset` '
                       f'({dataset!r}) or `configs`, not both')
    return [(str(l), f'{dataset}/{c}') for l, c in sorted(dict(configs).items())]
  return [(None, dataset)]


def _fields(cfg: Any) -> dict[str, str]:
  fields = dict(cfg.get('fields') or {})
  unknown = sorted(set(fields) - set(ROLES))
  missing = [r for r in ('query', 'positive', 'group_id') if not fields.get(r)]
  if unknown or missing:
    raise ValueError(f'source {cfg.get("name")!r} (tfds): `fields` maps roles {list(ROLES)} to '
                     f'feature names; unknown roles {unknown}, missing {missing}')
  if not (fields.get('lang') or cfg.get('configs') or cfg.get('lang')):
    raise ValueError(f'source {cfg.get("name")!r} (tfds): where is each record\'s language? '
                     "Give fields.lang (a feature), `configs` ({lang: config}) or `lang`")
  return fields


def _builder(cfg: Any, dataset: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (heavy)
  data_dir = cfg.get('data_dir')
  try:
    builder = tfds.builder(dataset, data_dir=data_dir, try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except  (tfds raises several kinds)
    raise FileNotFoundError(f'source {cfg.get("name")!r}: TFDS dataset {dataset!r} not found in '
                            f'{data_dir or "the default data_dir"}: '
                            f'{str(e).strip().splitlines()[0][:300]}') from None
  if not builder.is_prepared():
    raise FileNotFoundError(f'source {cfg.get("name")!r}: TFDS dataset {dataset!r} is not '
                            f'prepared in {builder.data_dir}; prepare it first (`tfds build '
                            f'{dataset} --data_dir=...`): sources are never downloaded here')
  return builder


def inputs(cfg: Any) -> list[str]:
  """The prepared files of every dataset the source reads (what its store is keyed by)."""
  out = []
  for _, dataset in _datasets(cfg):
    folder = str(_builder(cfg, dataset).data_dir)
    out += sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, f)))
  return out


def check_evaluation_data(cfg: Any) -> None:
  """Raises ValueError for a source that reads a split LAReQA's evaluation sets are built from
  (EVALUATION_DATA), unless it sets allow_evaluation_data=True."""
  name = str(cfg.get('dataset') or '').split('/')[0]
  split = str(cfg.get('split', 'train'))
  used = [s for s in EVALUATION_DATA.get(name, ()) if s in split.replace('+', ' ').replace(
      '[', ' ').split()]
  if used and not cfg.get('allow_evaluation_data'):
    raise ValueError(f'source {cfg.get("name")!r} (tfds): {name!r} split {used[0]!r} is what '
                     'the LAReQA evaluation sets are built from (XQuAD-R: XQuAD, a part of SQuAD '
                     'v1.1 dev; MLQA-R: MLQA dev and test): training on it trains on the '
                     'evaluation\'s questions. Use another split (e.g. a train split), or set '
                     'the source\'s allow_evaluation_data=True for a model never evaluated on '
                     'XQuAD-R or MLQA-R')


def settings(cfg: Any) -> dict[str, Any]:
  check_evaluation_data(cfg)
  return {'datasets': [list(d) for d in _datasets(cfg)], 'split': cfg.get('split', 'train'),
          'fields': dict(sorted(_fields(cfg).items())), 'lang': cfg.get('lang'),
          'min_lang_share': float(cfg.get('min_lang_share', store_lib.MIN_LANG_SHARE))}


def _get(example: dict, feature: str, where: str) -> Any:
  value = example
  for part in feature.split('.'):
    if not isinstance(value, dict) or part not in value:
      have = sorted(value) if isinstance(value, dict) else type(value).__name__
      raise ValueError(f'{where}: no feature {feature!r} (at {part!r}; have {have})')
    value = value[part]
  return value


def _text(value: Any) -> Any:
  if isinstance(value, np.ndarray):
    value = value.tolist()
  if isinstance(value, list):
    return _text(value[0]) if value else None
  if isinstance(value, bytes):
    return value.decode('utf-8')
  if isinstance(value, (np.integer, int)):
    return str(int(value))
  return value


def record(example: dict, fields: dict[str, str], lang: str | None, where: str) -> dict:
  """One TFDS example (numpy, as `tfds.as_numpy` gives it) -> a jsonl record, checked by
  `jsonl.parse_record` (ValueError naming `where`, the feature and the value)."""
  r = {role: _text(_get(example, feature, where)) for role, feature in fields.items()
       if role != 'negatives' and feature}
  if lang is not None:
    r['lang'] = lang
  if fields.get('negatives'):
    negatives = _get(example, fields['negatives'], where)
    negatives = negatives.tolist() if isinstance(negatives, np.ndarray) else list(negatives)
    r['negatives'] = [n.decode('utf-8') if isinstance(n, bytes) else n for n in negatives]
  if r.get('positive_id') is None:
    r.pop('positive_id', None)
  return jsonl.parse_record(r, where)


def prepare(cfg: Any, builder: store_lib.Builder, workers: int) -> store_lib.Store:
  del workers
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  s = settings(cfg)
  fields = _fields(cfg)
  items, lang_lines = {}, collections.defaultdict(list)
  counts = collections.Counter()
  for lang, dataset in _datasets(cfg):
    ds = _builder(cfg, dataset).as_dataset(split=s['split'], shuffle_files=False)
    for i, example in enumerate(tfds.as_numpy(ds)):
      where = f'{dataset}:{s["split"]}[{i}]'
      jsonl.add_record(items, lang_lines, record(example, fields, lang or s['lang'], where), where)
      counts['records'] += 1
  if not items:
    raise ValueError(f'source {cfg.get("name")!r}: no records in {s["datasets"]} split '
                     f'{s["split"]!r}')
  return jsonl.write_records(cfg, builder, items, lang_lines, dict(counts))
