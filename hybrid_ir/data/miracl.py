"""MIRACL-style retrieval data from local files: topics TSV, TREC qrels, corpus JSONL.

Formats (as distributed by MIRACL / Pyserini):
  topics: one `qid<TAB>query text` per line.
  qrels:  TREC format, one `qid Q0 docid relevance` per line (whitespace separated; the second
          field is ignored, MIRACL writes 0 or Q0), read by `text_files.load_qrels`.
Any of them may be gzipped (`.gz`).
  corpus: JSONL, one {"docid": ..., "title": ..., "text": ...} per line; the passage text given to
          the encoder is "title text" (MIRACL's convention), or the text alone when title is empty.
Every reader raises ValueError naming file:line and the offending value for a malformed line, an
empty text or a duplicate id; `check_qrels` names the qrels file and any docid missing from the
corpus. Nothing is dropped silently.
Recommended for: `hybrid_ir.evaluators.miracl.MiraclEvaluator` (nDCG@10, Recall@100). Related:
`hybrid_ir.data.text_files` (the line readers and the qrels reader).
"""
import logging
import pathlib

from hybrid_ir.data import text_files


def load_topics(path: str | pathlib.Path) -> dict[str, str]:
  """{qid: query text} in file order, from `qid<TAB>text` lines."""
  topics: dict[str, str] = {}
  for p, n, line in text_files.lines(path):
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


def load_corpus(path: str | pathlib.Path) -> tuple[list[str], list[str]]:
  """(docids, passage texts) in file order from JSONL with docid/title/text."""
  docids, texts, seen = [], [], set()
  for p, n, line in text_files.lines(path):
    doc = text_files.json_line(line, f'{p}:{n}')
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
