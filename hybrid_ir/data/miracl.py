"""MIRACL-style retrieval data from local files: topics TSV, TREC qrels, corpus JSONL.

Formats (as distributed by MIRACL / Pyserini):
  topics: one `qid<TAB>query text` per line.
  qrels:  TREC format, one `qid Q0 docid relevance` per line (whitespace separated; the second
          field is ignored, MIRACL writes 0 or Q0). One parser (`iter_qrels`) serves here and
          in `hybrid_ir.search`.
Any of them may be gzipped (`.gz`).
  corpus: JSONL, one {"docid": ..., "title": ..., "text": ...} per line; the passage text given to
          the encoder is "title text" (MIRACL's convention), or the text alone when title is empty.
Every reader raises ValueError naming file:line and the offending value for a malformed line, an
empty text or a duplicate id; `check_qrels` names the qrels file and any docid missing from the
corpus. Nothing is dropped silently.
Recommended for: `hybrid_ir.evaluators.miracl.MiraclEvaluator` (nDCG@10, Recall@100).
"""
from collections.abc import Iterator
import gzip
import json
import logging
import pathlib


def _lines(path: str | pathlib.Path):
  """(path, 1-based line number, line) of the non-blank lines; `.gz` files are read as gzip."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: file not found')
  opener = gzip.open if path.suffix == '.gz' else open
  with opener(path, 'rt', encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      line = line.rstrip('\n').rstrip('\r')
      if line.strip():
        yield path, n, line


def load_topics(path: str | pathlib.Path) -> dict[str, str]:
  """{qid: query text} in file order, from `qid<TAB>text` lines."""
  topics: dict[str, str] = {}
  for p, n, line in _lines(path):
    parts = line.split('\t')
    if len(parts) != 2:
      raise ValueError(f'{p}:{n}: expected "qid<TAB>text", got {len(parts)} fields: {line[:80]!r}')
    qid, text = parts[0].strip(), parts[1].strip()
    if not qid or not text:
      raise ValueError(f'{p}:{n}: empty {"qid" if not qid else "query text"} in {line[:80]!r}')
    if qid in topics:
      raise ValueError(f'{p}:{n}: duplicate qid {qid!r}')
    topics[qid] = text
  return topics


def iter_qrels(path: str | pathlib.Path) -> Iterator[tuple[str, str, str, int]]:
  """('file:line', qid, docid, relevance) for each judgement of TREC qrels `qid Q0 docid rel`.

  Raises ValueError naming file:line for a line without 4 whitespace-separated fields, a
  relevance that is not an integer, or a second judgement of one (qid, docid).
  Related: `load_qrels` (the dict), `hybrid_ir.search.read_qrels` (also checks the ids).
  """
  seen = set()
  for p, n, line in _lines(path):
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


def load_qrels(path: str | pathlib.Path) -> dict[str, dict[str, int]]:
  """{qid: {docid: relevance}} from TREC qrels lines `qid Q0 docid rel` (see `iter_qrels`)."""
  qrels: dict[str, dict[str, int]] = {}
  for _, qid, docid, rel in iter_qrels(path):
    qrels.setdefault(qid, {})[docid] = rel
  return qrels


def load_corpus(path: str | pathlib.Path) -> tuple[list[str], list[str]]:
  """(docids, passage texts) in file order from JSONL with docid/title/text."""
  docids, texts, seen = [], [], set()
  for p, n, line in _lines(path):
    try:
      doc = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f'{p}:{n}: malformed JSON: {e}') from None
    for field in ('docid', 'text'):
      if not isinstance(doc, dict) or field not in doc:
        raise ValueError(f'{p}:{n}: missing field {field!r}')
    docid = str(doc['docid'])
    title, text = str(doc.get('title') or '').strip(), str(doc['text'] or '').strip()
    if not text:
      raise ValueError(f'{p}:{n}: empty text for docid {docid!r}')
    if docid in seen:
      raise ValueError(f'{p}:{n}: duplicate docid {docid!r}')
    seen.add(docid)
    docids.append(docid)
    texts.append(f'{title} {text}' if title else text)
  return docids, texts


def check_qrels(qrels: dict[str, dict[str, int]], docids: list[str], topics: dict[str, str],
                qrels_path: str | pathlib.Path = '<qrels>') -> dict[str, int]:
  """Raises if a judged docid is not in the corpus; counts and logs topic / qrels mismatches.

  Returns counts: topics, judged topics, topics without judgements, qrels topics missing from
  the topics file, and judged pairs.
  """
  corpus = set(docids)
  for qid, docs in qrels.items():
    for docid in docs:
      if docid not in corpus:
        raise ValueError(f'{qrels_path}: qid {qid!r} judges docid {docid!r}, which is not in the '
                         'corpus')
  counts = {
      'num_topics': len(topics),
      'num_judged_topics': sum(q in qrels for q in topics),
      'num_unjudged_topics': sum(q not in qrels for q in topics),
      'num_qrels_topics_not_in_topics': sum(q not in topics for q in qrels),
      'num_judged_pairs': sum(len(d) for q, d in qrels.items() if q in topics),
  }
  if counts['num_unjudged_topics'] or counts['num_qrels_topics_not_in_topics']:
    logging.warning('%s: %d topics have no judgements and %d judged qids are not in the topics '
                    'file; both are left out of the metrics', qrels_path,
                    counts['num_unjudged_topics'], counts['num_qrels_topics_not_in_topics'])
  return counts
