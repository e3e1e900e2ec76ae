"""Line-oriented input files: plain or gzipped text, JSON, JSONL, TSV and TREC qrels.

Every reader that takes a user's file goes through here, so that a bad line is always named the
same way: `file:line: what is wrong` and the offending value. A file named `*.gz` is read as gzip.

  open_text(path) / open_bytes(path)   a file, gzip by its name
  lines(path)                          (path, line number, line) of the non-blank lines
  raw_lines(paths)                     ('file:line', line number, bytes) of every line
  decode_line(raw, where)              a raw line as UTF-8, or ValueError naming the byte
  json_line(line, where)               one JSONL line, or ValueError naming the column
  load_json(path)                      a whole JSON file, or ValueError naming the line
  iter_qrels(path) / load_qrels(path)  TREC qrels `qid Q0 docid relevance`
  read_texts(path, what)               a corpus or queries file (.jsonl or .tsv) -> `Texts`
  read_qrels(path, queries, corpus)    qrels whose every id is in the queries / corpus

Use it for: any new source kind or binary that reads text files. Related: `hybrid_ir.data.jsonl`,
`hybrid_ir.data.bitext`, `hybrid_ir.data.miracl` (which parse their records with these) and
`hybrid_ir.search` (whose corpus and queries are `read_texts`' formats); `store.file_digest`
(a file's sha256).
"""
from collections.abc import Iterable, Iterator
import dataclasses
import gzip
import json
import os
import pathlib
from typing import Any


def open_text(path: str | os.PathLike):
  """The file opened for reading as UTF-8 text; gzip when its name ends in `.gz`."""
  path = str(path)
  return gzip.open(path, 'rt', encoding='utf-8') if path.endswith('.gz') else open(
      path, encoding='utf-8')


def open_bytes(path: str | os.PathLike):
  """The file opened for reading bytes; gzip when its name ends in `.gz` (for readers that
  decode each line themselves, to count a bad line instead of failing on it)."""
  path = str(path)
  return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def raw_lines(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[str, int, bytes]]:
  """('file:line', 1-based line number, the line's bytes) of every line of each file in turn,
  blank ones included: for readers that decode each line themselves (`decode_line`), to count a
  bad line against a skip budget instead of failing on it."""
  for path in paths:
    with open_bytes(path) as f:
      for n, raw in enumerate(f, 1):
        yield f'{path}:{n}', n, raw


def lines(path: str | os.PathLike) -> Iterator[tuple[pathlib.Path, int, str]]:
  """(path, 1-based line number, line without its line ending) of the non-blank lines.

  Raises FileNotFoundError naming the path.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: file not found')
  with open_text(path) as f:
    for n, line in enumerate(f, 1):
      line = line.rstrip('\n').rstrip('\r')
      if line.strip():
        yield path, n, line


def decode_line(raw: bytes, where: str) -> str:
  """`raw` decoded as UTF-8; ValueError naming `where` (file:line), the byte and its context."""
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ValueError(f'{where}: invalid UTF-8 at byte {e.start + 1} of the line '
                     f'({raw[max(0, e.start - 10):e.start + 10]!r})') from None


def json_line(line: str | bytes, where: str) -> Any:
  """One JSONL line parsed; ValueError naming `where` (file:line) and the column."""
  try:
    return json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f'{where}: invalid JSON: {e.msg} at column {e.colno}') from None


def load_json(path: str | os.PathLike) -> Any:
  """A whole JSON file parsed; ValueError naming file:line and what is wrong there."""
  try:
    with open_text(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}:{e.lineno}: invalid JSON: {e.msg}') from None


# ------------------------------------------------------------------------------------------------
# TREC qrels.
# ------------------------------------------------------------------------------------------------

def iter_qrels(path: str | os.PathLike) -> Iterator[tuple[str, str, str, int]]:
  """('file:line', qid, docid, relevance) for each judgement of TREC qrels `qid Q0 docid rel`.

  The second field is ignored (MIRACL writes 0 or Q0). Raises ValueError naming file:line for a
  line without 4 whitespace-separated fields, a relevance that is not an integer, or a second
  judgement of one (qid, docid). Related: `load_qrels` (the dict), `read_qrels` (checks the ids).
  """
  seen = set()
  for p, n, line in lines(path):
    parts = line.split()
    if len(parts) != 4:
      raise ValueError(f"{p}:{n}: expected 'qid Q0 docid relevance', got {len(parts)} fields: "
                       f'{line.strip()[:80]!r}')
    qid, _, docid, rel = parts
    try:
      rel = int(rel)
    except ValueError:
      raise ValueError(f'{p}:{n}: relevance {rel!r} is not an integer') from None
    if (qid, docid) in seen:
      raise ValueError(f'{p}:{n}: duplicate judgement for qid {qid!r} docid {docid!r}')
    seen.add((qid, docid))
    yield f'{p}:{n}', qid, docid, rel


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
  """{qid: {docid: relevance}} from TREC qrels lines `qid Q0 docid rel` (see `iter_qrels`)."""
  qrels: dict[str, dict[str, int]] = {}
  for _, qid, docid, rel in iter_qrels(path):
    qrels.setdefault(qid, {})[docid] = rel
  return qrels


# ------------------------------------------------------------------------------------------------
# Corpus and queries files (.jsonl or .tsv, optionally .gz).
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Texts:
  """Records of a corpus or queries file, in file order.

  Attributes: path; ids, texts, langs (None where a record has no lang), lines (the 1-based line
  of each record, for error messages).
  """
  path: pathlib.Path
  ids: list[str]
  texts: list[str]
  langs: list[str | None]
  lines: list[int]

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def has_langs(self) -> bool:
    return any(l is not None for l in self.langs)


def texts_format(path: pathlib.Path) -> str:
  """'jsonl' or 'tsv', from the file name (without `.gz`); ValueError for another name."""
  name = path.name[:-3] if path.name.endswith('.gz') else path.name
  ext = name.rpartition('.')[2].lower()
  if ext in ('jsonl', 'json'):
    return 'jsonl'
  if ext in ('tsv', 'txt'):
    return 'tsv'
  raise ValueError(f'{path}: unknown format (from the file name); use .jsonl ({{"id", "text", '
                   '"lang"}} per line) or .tsv (id<TAB>text[<TAB>lang]), optionally .gz')


def _check_id(value, where: str, field: str) -> str:
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise ValueError(f'{where}: {field} must be a string or an integer, got {value!r}')
  value = str(value).strip()
  if not value:
    raise ValueError(f'{where}: empty {field}')
  if any(c.isspace() for c in value):
    raise ValueError(f'{where}: {field} {value!r} contains whitespace (TREC files are whitespace '
                     'separated)')
  return value


def _jsonl_record(line: str, where: str, what: str) -> tuple[Any, str, Any]:
  obj = json_line(line, where)
  if not isinstance(obj, dict):
    raise ValueError(f'{where}: expected a JSON object, got {type(obj).__name__}')
  for field in ('id', 'text'):
    if field not in obj:
      raise ValueError(f'{where}: missing field {field!r} (have {sorted(obj)}; a {what} '
                       "record needs 'id' and 'text', optionally 'lang' and 'title')")
  text, title = obj['text'], obj.get('title')
  if not isinstance(text, str):
    raise ValueError(f'{where}: text must be a string, got {text!r}')
  if title is not None and not isinstance(title, str):
    raise ValueError(f'{where}: title must be a string, got {title!r}')
  if title and title.strip() and text.strip():
    text = f'{title.strip()} {text.strip()}'
  return obj['id'], text, obj.get('lang')


def _tsv_record(line: str, where: str) -> tuple[str, str, str | None]:
  parts = line.split('\t')
  if len(parts) not in (2, 3):
    raise ValueError(f'{where}: expected id<TAB>text[<TAB>lang], got {len(parts)} '
                     f'tab-separated fields: {line[:80]!r}')
  return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def read_texts(path: str | os.PathLike, what: str = 'corpus') -> Texts:
  """Reads a corpus or queries file: `.jsonl` ({"id", "text"[, "lang", "title"]} per line; a
  title is prepended to the text) or `.tsv` (id<TAB>text[<TAB>lang]), optionally `.gz`.

  Raises ValueError naming `file:line` for any malformed record (a missing field, an empty id or
  text, an id with whitespace, a duplicate id), and FileNotFoundError. `what` ('corpus' /
  'queries') only words the messages.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{what} file not found: {path}')
  fmt = texts_format(path)
  ids, texts, langs, line_numbers, seen = [], [], [], [], {}
  for _, n, line in lines(path):
    where = f'{path}:{n}'
    rid, text, lang = (_jsonl_record(line, where, what) if fmt == 'jsonl'
                       else _tsv_record(line, where))
    rid = _check_id(rid, where, 'id')
    if not text.strip():
      raise ValueError(f'{where}: empty text for id {rid!r}')
    if lang is not None:
      if not isinstance(lang, str) or not lang.strip():
        raise ValueError(f'{where}: lang must be a non-empty string, got {lang!r}')
      lang = lang.strip()
    if rid in seen:
      raise ValueError(f'{where}: duplicate id {rid!r} (first at line {seen[rid]})')
    seen[rid] = n
    ids.append(rid)
    texts.append(text.strip())
    langs.append(lang)
    line_numbers.append(n)
  if not ids:
    raise ValueError(f'{path}: no {what} records')
  return Texts(path=path, ids=ids, texts=texts, langs=langs, lines=line_numbers)


def read_qrels(path: str | os.PathLike, queries: Texts, corpus: Texts
               ) -> dict[str, dict[str, int]]:
  """{qid: {docid: relevance}} from TREC qrels, every id checked against the queries and corpus.

  Raises ValueError naming `file:line` for a malformed line, a non-integer relevance, a duplicate
  judgement, or a qid / docid that is not in the queries / corpus file.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'qrels file not found: {path}')
  qids, docids = set(queries.ids), set(corpus.ids)
  qrels: dict[str, dict[str, int]] = {}
  for where, qid, docid, rel in iter_qrels(path):
    if qid not in qids:
      raise ValueError(f'{where}: qid {qid!r} is not in the queries file {queries.path}')
    if docid not in docids:
      raise ValueError(f'{where}: docid {docid!r} (qid {qid!r}) is not in the corpus file '
                       f'{corpus.path}')
    qrels.setdefault(qid, {})[docid] = rel
  if not qrels:
    raise ValueError(f'{path}: no judgements')
  return qrels
