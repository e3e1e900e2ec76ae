"""MIRACL-style evaluation: metrics cross-checked with ir_measures, resumable sharded encoding."""
import json

import ir_measures
import numpy as np
import pytest
from ir_measures import R, nDCG

from hybrid_ir.data import miracl as miracl_data
from hybrid_ir.data import text_files
from hybrid_ir.evaluators import miracl

N_DOCS, N_TOPICS, DIM = 300, 12, 16


@pytest.fixture
def files(tmp_path):
  rng = np.random.default_rng(0)
  docs = [{'docid': f'd{i}#0', 'title': f'Title {i // 3}' if i % 4 else '',
           'text': f'passage number {i}'} for i in range(N_DOCS)]
  (tmp_path / 'corpus.jsonl').write_text('\n'.join(json.dumps(d) for d in docs) + '\n')
  (tmp_path / 'topics.tsv').write_text(''.join(f'q{i}\tquestion {i}\n' for i in range(N_TOPICS)))
  lines = []
  for i in range(N_TOPICS - 1):  # the last topic has no judgements: excluded and counted
    for j in rng.choice(N_DOCS, 8, replace=False):
      lines.append(f'q{i} 0 d{j}#0 {rng.choice([0, 1, 1, 2])}')
  lines.append(f'q0 0 d{N_DOCS - 1}#0 {-1}')  # a negative grade counts as 0 gain
  (tmp_path / 'qrels.txt').write_text('\n'.join(lines) + '\n')
  return tmp_path


class Encoder:
  """Random but fixed unit vector per text; records every call."""

  def __init__(self, fail_after=None):
    self.calls, self.fail_after = [], fail_after

  def __call__(self, params, texts, kind):
    if self.fail_after is not None and len(self.calls) >= self.fail_after:
      raise KeyboardInterrupt('killed')  # what a kill mid-encode looks like to our code
    self.calls.append((kind, texts[0], len(texts)))
    out = np.stack([np.random.default_rng(abs(hash((kind, t))) % 2**32).standard_normal(DIM)
                    for t in texts])
    if kind == 'query':  # make retrieval non-trivial: queries near some documents
      out = out + 2 * np.stack([self._doc(int(t.split()[-1]) * 7 % N_DOCS) for t in texts])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

  def _doc(self, i):
    text = f'Title {i // 3} passage number {i}' if i % 4 else f'passage number {i}'
    return np.random.default_rng(abs(hash(('passage', text))) % 2**32).standard_normal(DIM)


def _evaluator(files, enc, **kw):
  return miracl.MiraclEvaluator(enc, str(files / 'topics.tsv'), str(files / 'qrels.txt'),
                                str(files / 'corpus.jsonl'), eval_name='miracl-xx',
                                cand_block=64, query_block=8, **kw)


def test_metrics_match_ir_measures(files):
  ev = _evaluator(files, Encoder(), shard_size=50)
  out = dict(ev.run(params=None))
  res = ev.last_result
  qrels = text_files.load_qrels(files / 'qrels.txt')
  # The run as ir_measures sees it: our top-100 with strictly decreasing scores.
  run = {q: {d: float(100 - r) for r, d in enumerate(docs)}
         for q, docs in zip(res.qids, res.top_docids)}
  judged = {q: d for q, d in qrels.items() if any(g > 0 for g in d.values())}
  ref = {(m.query_id, str(m.measure)): m.value
         for m in ir_measures.iter_calc([nDCG @ 10, R @ 100], judged, run)}
  assert len(ref) == 2 * (N_TOPICS - 1)
  for i, q in enumerate(res.qids):
    if q == f'q{N_TOPICS - 1}':
      assert np.isnan(res.ndcg10[i])
      continue
    assert res.ndcg10[i] == pytest.approx(ref[(q, 'nDCG@10')], abs=1e-12)
    assert res.recall100[i] == pytest.approx(ref[(q, 'R@100')], abs=1e-12)
  agg = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], judged, run)
  assert out['miracl-xx/ndcg@10'] == pytest.approx(agg[nDCG @ 10], abs=1e-12)
  assert out['miracl-xx/recall@100'] == pytest.approx(agg[R @ 100], abs=1e-12)
  assert 0 < out['miracl-xx/ndcg@10'] < 1 and 0 < out['miracl-xx/recall@100'] < 1
  assert out['miracl-xx/num_unjudged'] == 1 and out['miracl-xx/num_judged'] == N_TOPICS - 1
  # Retrieval itself: the top-100 is the exact brute-force top-100.
  enc = Encoder()
  q = enc(None, [f'question {i}' for i in range(N_TOPICS)], 'query')
  c = enc(None, miracl_data.load_corpus(files / 'corpus.jsonl')[1], 'passage')
  expect = np.argsort(-(q @ c.T), axis=1, kind='stable')[:, :100]
  assert [[f'd{j}#0' for j in row] for row in expect] == res.top_docids
  json.dumps(res.to_json())
  assert f'| | {out["miracl-xx/ndcg@10"]:.3f} |' in ev.result.table()
  assert f'| e5 step 3 | {out["miracl-xx/ndcg@10"]:.3f} |' in ev.result.table('e5 step 3')


def test_evaluator_resume_gives_same_metrics(files, tmp_path):
  with pytest.raises(KeyboardInterrupt):
    dict(_evaluator(files, Encoder(fail_after=3), cache_dir=str(tmp_path / 'c'), cache_key='m',
                    shard_size=50).run(None))
  enc = Encoder()
  resumed = dict(_evaluator(files, enc, cache_dir=str(tmp_path / 'c'), cache_key='m',
                            shard_size=50).run(None))
  assert [c[0] for c in enc.calls] == ['query'] + ['passage'] * 4  # 6 shards, 2 done before
  plain = dict(_evaluator(files, Encoder(), shard_size=50).run(None))
  assert resumed == plain


class ParamsEncoder(Encoder):
  """Embeddings that depend on the params, as a real encoder's do: another checkpoint, others."""

  def __call__(self, params, texts, kind):
    out = super().__call__(None, texts, kind)
    return out if kind == 'query' else np.roll(out, int(params['shift']), axis=1)


def test_cache_entry_changes_with_the_checkpoint(files, tmp_path):
  """A polling evaluator scores checkpoint after checkpoint with one cache_dir and cache_key: each
  gets its own corpus embeddings (the key was a user string, so the first ones were reused)."""
  ev = _evaluator(files, ParamsEncoder(), cache_dir=str(tmp_path / 'c'), cache_key='model-config',
                  shard_size=50)
  first = dict(ev.run({'shift': np.int32(0)}))
  second = dict(ev.run({'shift': np.int32(5)}))
  plain = dict(_evaluator(files, ParamsEncoder(), shard_size=50).run({'shift': np.int32(5)}))
  assert second == plain and second != first
  assert len(list((tmp_path / 'c' / 'miracl-xx').iterdir())) == 2  # one entry per checkpoint
  again = ParamsEncoder()
  ev.predict_fn = again
  assert dict(ev.run({'shift': np.int32(0)})) == first
  assert [c[0] for c in again.calls] == ['query']  # the corpus came from the cache


def test_errors_name_file_line_and_value(files):
  with open(files / 'qrels.txt', 'a') as f:
    f.write('q1 0 nosuchdoc 1\n')
  with pytest.raises(ValueError, match=r"qrels.txt: qid 'q1' judges docid 'nosuchdoc'"):
    _evaluator(files, Encoder())
  (files / 'bad.tsv').write_text('q1\tfine\nq2 no tab here\n')
  with pytest.raises(ValueError, match=r'bad.tsv:2: expected "qid<TAB>text"'):
    miracl_data.load_topics(files / 'bad.tsv')
  (files / 'bad.tsv').write_text('q1\t  \n')
  with pytest.raises(ValueError, match=r'bad.tsv:1: empty query text'):
    miracl_data.load_topics(files / 'bad.tsv')
  (files / 'bad.qrels').write_text('q1 0 d1 1\nq1 0 d2\n')
  with pytest.raises(ValueError, match=r"bad.qrels:2: expected 'qid Q0 docid relevance'"):
    text_files.load_qrels(files / 'bad.qrels')
  (files / 'bad.qrels').write_text('q1 0 d1 yes\n')
  with pytest.raises(ValueError, match=r"bad.qrels:1: relevance 'yes'"):
    text_files.load_qrels(files / 'bad.qrels')
  (files / 'bad.jsonl').write_text('{"docid": "a", "title": "", "text": "x"}\n{"docid": "b", "title": "t", "text": " "}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: empty text for docid 'b'"):
    miracl_data.load_corpus(files / 'bad.jsonl')
  (files / 'bad.jsonl').write_text('{"docid": "a", "text": "x"}\n{"docid": \n')
  with pytest.raises(ValueError, match=r'bad.jsonl:2: invalid JSON: .* at column \d+'):
    miracl_data.load_corpus(files / 'bad.jsonl')
  with pytest.raises(FileNotFoundError, match='missing.tsv'):
    miracl_data.load_topics(files / 'missing.tsv')
