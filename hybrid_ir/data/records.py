"""Training records: the one type every training source produces, its validation and counts.

A record is a plain dict `{group_id: str, lang: str, query: str, positive: str,
negatives: list[str]}`. `group_id` links the translations of one item across languages (the
SQuAD question id, the mMARCO query id), so a cross-lingual pair is the query of one language's
record with the positive of another language's record of the same group.
"""
import collections
from collections.abc import Iterable
from typing import TypedDict

from absl import logging

FIELDS = ('group_id', 'lang', 'query', 'positive', 'negatives')


class Record(TypedDict):
  group_id: str
  lang: str
  query: str
  positive: str
  negatives: list[str]


def make_record(group_id: str, lang: str, query: str, positive: str,
                negatives: Iterable[str] = (), *, where: str) -> Record:
  """Builds and validates a record; `where` ('file:line' or similar) goes into errors."""
  return validate_record({'group_id': group_id, 'lang': lang, 'query': query,
                          'positive': positive, 'negatives': list(negatives)}, where=where)


def validate_record(record: dict, *, where: str) -> Record:
  """Checks fields and types; empty text is an error, never a skip.

  Raises ValueError naming `where`, the field and the offending value.
  """
  if not isinstance(record, dict):
    raise ValueError(f'{where}: record must be an object, got {type(record).__name__}: '
                     f'{str(record)[:80]!r}')
  unknown = set(record) - set(FIELDS)
  if unknown:
    raise ValueError(f'{where}: unknown record fields {sorted(unknown)}; known: {list(FIELDS)}')
  record = dict(record)
  record.setdefault('negatives', [])
  for field in ('group_id', 'lang', 'query', 'positive'):
    if field not in record:
      raise ValueError(f'{where}: missing field {field!r}')
    value = record[field]
    if not isinstance(value, str) or not value.strip():
      raise ValueError(f'{where}: field {field!r} must be a non-empty string, got {value!r}')
  negatives = record['negatives']
  if not isinstance(negatives, list):
    raise ValueError(f'{where}: field negatives must be a list of strings, got {negatives!r}')
  for i, neg in enumerate(negatives):
    if not isinstance(neg, str) or not neg.strip():
      raise ValueError(f'{where}: negatives[{i}] must be a non-empty string, got {neg!r}')
  return Record(**record)


class Counts:
  """Per-language counts of records read and skipped (with reason) for one source.

  Skips are only for documented reasons (e.g. an unanswerable SQuAD v2 question); anything
  malformed raises instead.
  """

  def __init__(self, source: str):
    self.source = source
    self.read = collections.Counter()
    self.skipped = collections.Counter()  # (lang, reason) -> n
    self.notes = collections.Counter()  # (lang, note) -> n: kept records worth knowing about

  def add_read(self, lang: str, n: int = 1) -> None:
    self.read[lang] += n

  def add_skip(self, lang: str, reason: str, n: int = 1) -> None:
    self.skipped[(lang, reason)] += n

  def add_note(self, lang: str, note: str, n: int = 1) -> None:
    self.notes[(lang, note)] += n

  def log(self) -> None:
    for lang in sorted(set(self.read) | {l for l, _ in self.skipped}):
      skips = {r: n for (l, r), n in sorted(self.skipped.items()) if l == lang}
      notes = {r: n for (l, r), n in sorted(self.notes.items()) if l == lang}
      logging.info('source %s lang %s: %d records read; skipped: %s%s',
                   self.source, lang, self.read[lang], skips or 'none',
                   f'; notes: {notes}' if notes else '')


def count_by_lang(records: Iterable[Record]) -> dict[str, int]:
  """Number of records per language."""
  return dict(collections.Counter(r['lang'] for r in records))
