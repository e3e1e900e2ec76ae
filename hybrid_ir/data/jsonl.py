"""Generic JSONL training records: one JSON object per line with the record fields.

Fields: group_id, lang, query, positive (non-empty strings) and optional negatives (a list of
non-empty strings); no others. Skipped, counted per file: blank lines. Anything else malformed
raises with file:line.
"""
import json
import os
from collections.abc import Sequence

from hybrid_ir.data import records as records_lib

Record = records_lib.Record


def read_jsonl_file(path: str | os.PathLike,
                    counts: records_lib.Counts | None = None) -> list[Record]:
  """Reads one JSONL file of records."""
  out = []
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      where = f'{path}:{lineno}'
      if not line.strip():
        if counts:
          counts.add_skip(f'({os.path.basename(path)})', 'blank line')
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{where}: invalid JSON: {e.msg} at column {e.colno}') from e
      record = records_lib.validate_record(obj, where=where)
      out.append(record)
      if counts:
        counts.add_read(record['lang'])
  return out


def load_jsonl(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
               name: str = 'jsonl') -> list[Record]:
  """Reads one or more JSONL files of records, logging counts per language.

  Recommended for: data converted offline into the record format (any language mix, ids
  linking translations). Related: `squad`, `triples` for the raw formats.
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  if not paths:
    raise ValueError(f'load_jsonl: source {name!r} has no paths')
  counts = records_lib.Counts(name)
  out = []
  for path in paths:
    out.extend(read_jsonl_file(path, counts))
  counts.log()
  return out
