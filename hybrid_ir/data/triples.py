"""mMARCO-style triples: one tab-separated file per language -> training records.

Accepted columns (no quoting; tabs and newlines cannot occur inside a field):
  6 columns: query_id, query, positive_id, positive, negative_id, negative
  4 columns: query_id, query, positive_id, positive            (no hard negative)
A file uses one layout throughout; an optional first line naming exactly these columns is a
header. The group id is the query id, which mMARCO shares across its translations, so the same
query in two languages forms a cross-lingual pair. A query with several lines (one per negative)
gives one record per line; the input pipeline uses one of them per epoch.

Skipped, counted per language: blank lines and the header. Anything else malformed (wrong
column count, an empty field) raises with file:line.
"""
import os
from collections.abc import Mapping

from hybrid_ir.data import records as records_lib

Record = records_lib.Record
COLUMNS = ('query_id', 'query', 'positive_id', 'positive', 'negative_id', 'negative')


def read_triples_file(path: str | os.PathLike, lang: str,
                      counts: records_lib.Counts | None = None) -> list[Record]:
  """Reads one language's TSV (layout in the module docstring) into records."""
  out = []
  width = None
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      where = f'{path}:{lineno}'
      line = line.rstrip('\r\n')
      if not line.strip():
        if counts:
          counts.add_skip(lang, 'blank line')
        continue
      fields = line.split('\t')
      if lineno == 1 and tuple(fields) in (COLUMNS, COLUMNS[:4]):
        if counts:
          counts.add_skip(lang, 'header')
        continue
      if len(fields) not in (4, 6) or (width and len(fields) != width):
        expected = width or '4 or 6'
        raise ValueError(f'{where}: expected {expected} tab-separated columns '
                         f'({", ".join(COLUMNS[:width or 6])}), got {len(fields)}: {line[:80]!r}')
      width = len(fields)
      for name, value in zip(COLUMNS, fields):
        if not value.strip():
          raise ValueError(f'{where}: empty {name}')
      negatives = [fields[5]] if width == 6 else []
      out.append(records_lib.make_record(fields[0], lang, fields[1], fields[3], negatives,
                                         where=where))
      if counts:
        counts.add_read(lang)
  return out


def load_triples(files: Mapping[str, str | os.PathLike], *, name: str = 'triples') -> list[Record]:
  """Reads {lang: tsv path} into records, logging counts per language.

  Recommended for: mMARCO (its translated training triples, joined to text) and any
  per-language (query, positive, negative) data with ids shared across languages.
  Related: `hybrid_ir.data.jsonl` for data that already has the record fields.
  """
  if not files or not isinstance(files, Mapping):
    raise ValueError(f'load_triples: source {name!r} needs files as {{lang: path}}, got {files!r}')
  counts = records_lib.Counts(name)
  out = []
  for lang, path in files.items():
    out.extend(read_triples_file(path, lang, counts))
  counts.log()
  return out
