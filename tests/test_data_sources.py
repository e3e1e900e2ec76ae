"""Tests for the training record sources: SQuAD/LAReQA (+ article folds), triples, JSONL."""
import json

import pytest

from hybrid_ir import input_pipeline
from hybrid_ir.data import jsonl
from hybrid_ir.data import records
from hybrid_ir.data import squad
from hybrid_ir.data import triples


# --- SQuAD / LAReQA ---

def test_xquad_r_answer_sentences(shared_data):
  path = shared_data / 'xquad-r' / 'de.json'
  items = squad.read_squad_file(path, 'de')
  assert len(items) == 1190 and len({r['group_id'] for r, _ in items}) == 1190
  data = json.loads(path.read_text())
  by_id = {qa['id']: (para, qa) for art in data['data'] for para in art['paragraphs']
           for qa in para['qas']}
  for record, _ in items[::37]:
    para, qa = by_id[record['group_id']]
    start = qa['answers'][0]['answer_start']
    (s, e), = [b for b in para['sentence_breaks'] if b[0] <= start < b[1]]
    assert record['positive'] == para['sentences'][para['sentence_breaks'].index([s, e])]
    assert record['query'] == qa['question'] and record['lang'] == 'de'


def _squad_file(tmp_path, name, qas, sentences=True, context='Alpha beta. Gamma delta.'):
  para = {'context': context, 'qas': qas}
  if sentences:
    para.update(sentences=['Alpha beta.', 'Gamma delta.'], sentence_breaks=[[0, 11], [12, 24]])
  path = tmp_path / name
  path.write_text(json.dumps({'version': '1.1', 'data': [{'title': 't', 'paragraphs': [para]}]}))
  return path


def _qa(qid, start, impossible=False):
  answers = [] if impossible else [{'answer_start': start, 'text': 'x'}]
  return {'id': qid, 'question': f'question {qid}?', 'answers': answers,
          'is_impossible': impossible}


def test_squad_fallback_skip_and_errors(tmp_path):
  counts = records.Counts('t')
  path = _squad_file(tmp_path, 'en.json', [_qa('a', 12), _qa('b', 0, impossible=True)],
                     sentences=False)
  items = squad.read_squad_file(path, 'en', counts)
  assert [r['positive'] for r, _ in items] == ['Alpha beta. Gamma delta.']  # paragraph fallback
  assert counts.read['en'] == 1 and counts.skipped[('en', 'unanswerable')] == 1
  items = squad.read_squad_file(_squad_file(tmp_path, 'de.json', [_qa('a', 12)]), 'de')
  assert items[0][0]['positive'] == 'Gamma delta.'
  bad = _squad_file(tmp_path, 'x.json', [_qa('a', 11)])  # the space between the sentences
  where = r'x\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]'
  with pytest.raises(ValueError, match=where + '.*0 sentences'):
    squad.read_squad_file(bad, 'x')
  dup = _squad_file(tmp_path, 'y.json', [_qa('a', 1), _qa('a', 2)])
  with pytest.raises(ValueError, match=r"qas\[1\]: duplicate question id 'a'"):
    squad.read_squad_file(dup, 'y')
  broken = tmp_path / 'z.json'
  broken.write_text('{"data": [\n  {"title": }\n]}')
  with pytest.raises(ValueError, match=r'z\.json:2: invalid JSON'):
    squad.read_squad_file(broken, 'z')


def test_load_squad_unknown_language(shared_data):
  with pytest.raises(ValueError, match=r"\['fr'\].*available: \['ar', 'de', 'en', 'es', 'hi'"):
    squad.load_squad(shared_data / 'mlqa-r', ['en', 'fr'])


@pytest.mark.parametrize('dataset', ['xquad-r', 'mlqa-r'])
def test_article_folds_do_not_leak(shared_data, dataset):
  directory = shared_data / dataset
  langs = sorted(p.stem for p in directory.glob('*.json'))
  items = {l: squad.read_squad_file(directory / f'{l}.json', l) for l in langs}
  article_of = {}  # group id -> the article keys it occurs in, in every language
  for l in langs:
    for r, a in items[l]:
      article_of.setdefault(r['group_id'], set()).add(a)
  all_groups = set(article_of)
  heldout_union = set()
  for fold in range(5):
    train = squad.load_squad(directory, split='train', num_folds=5, fold=fold, seed=0)
    held = squad.load_squad(directory, split='heldout', num_folds=5, fold=fold, seed=0)
    train_groups = {r['group_id'] for r in train}
    held_groups = {r['group_id'] for r in held}
    assert train_groups and held_groups and not train_groups & held_groups
    assert train_groups | held_groups == all_groups
    # No article (in any language) contributes to both sides.
    train_articles = set().union(*(article_of[g] for g in train_groups))
    held_articles = set().union(*(article_of[g] for g in held_groups))
    assert not train_articles & held_articles
    # All translations of a held-out question are held out.
    assert len(held) == sum(1 for l in langs for r, _ in items[l] if r['group_id'] in held_groups)
    assert not heldout_union & held_groups
    heldout_union |= held_groups
  assert heldout_union == all_groups  # the folds partition the set
  again = squad.load_squad(directory, split='heldout', num_folds=5, fold=0, seed=0)
  other = squad.load_squad(directory, split='heldout', num_folds=5, fold=0, seed=1)
  first = squad.load_squad(directory, split='heldout', num_folds=5, fold=0, seed=0)
  assert again == first and {r['group_id'] for r in other} != {r['group_id'] for r in first}


# --- mMARCO-style triples ---

def test_triples(tmp_path):
  en = tmp_path / 'en.tsv'
  en.write_text('query_id\tquery\tpositive_id\tpositive\tnegative_id\tnegative\n'
                'q1\twhat is a\tp1\ta is b\tp9\tc is d\n'
                'q1\twhat is a\tp1\ta is b\tp8\te is f\n\n')
  de = tmp_path / 'de.tsv'
  de.write_text('q1\twas ist a\tp1\ta ist b\tp9\tc ist d\n')
  recs = triples.load_triples({'en': en, 'de': de})
  assert [(r['group_id'], r['lang'], r['negatives']) for r in recs] == [
      ('q1', 'en', ['c is d']), ('q1', 'en', ['e is f']), ('q1', 'de', ['c ist d'])]
  four = tmp_path / 'four.tsv'
  four.write_text('q2\tquery\tp2\tpassage\n')
  assert triples.read_triples_file(four, 'en')[0]['negatives'] == []


@pytest.mark.parametrize('text, match', [
    ('q1\tquery\tp1\tpassage\tp2\n', r'bad\.tsv:1: expected 4 or 6 tab-separated columns'),
    ('q1\tquery\tp1\tpassage\nq2\tquery\tp1\tpassage\tp2\tneg\n', r'bad\.tsv:2: expected 4'),
    ('q1\tquery\tp1\t \n', r'bad\.tsv:1: empty positive'),
])
def test_triples_malformed(tmp_path, text, match):
  path = tmp_path / 'bad.tsv'
  path.write_text(text)
  with pytest.raises(ValueError, match=match):
    triples.read_triples_file(path, 'en')


# --- JSONL ---

def _jsonl(tmp_path, lines):
  path = tmp_path / 'r.jsonl'
  path.write_text('\n'.join(lines) + '\n')
  return path


def test_jsonl(tmp_path):
  good = json.dumps({'group_id': 'g', 'lang': 'en', 'query': 'q', 'positive': 'p'})
  recs = jsonl.load_jsonl(_jsonl(tmp_path, [good, '', good.replace('"en"', '"de"')]))
  assert [r['lang'] for r in recs] == ['en', 'de'] and recs[0]['negatives'] == []


@pytest.mark.parametrize('line, match', [
    ('{"group_id": "g", ', r'r\.jsonl:2: invalid JSON'),
    ('{"group_id": "g", "lang": "en", "query": "q"}', r"r\.jsonl:2: missing field 'positive'"),
    ('{"group_id": "g", "lang": "en", "query": "", "positive": "p"}',
     r"r\.jsonl:2: field 'query' must be a non-empty string"),
    ('{"group_id": "g", "lang": "en", "query": "q", "positive": "p", "score": 1}',
     r"r\.jsonl:2: unknown record fields \['score'\]"),
    ('{"group_id": "g", "lang": "en", "query": "q", "positive": "p", "negatives": [""]}',
     r'r\.jsonl:2: negatives\[0\]'),
])
def test_jsonl_malformed(tmp_path, line, match):
  good = json.dumps({'group_id': 'g', 'lang': 'en', 'query': 'q', 'positive': 'p'})
  with pytest.raises(ValueError, match=match):
    jsonl.load_jsonl(_jsonl(tmp_path, [good, line]))


def test_load_sources_dispatch(tmp_path, shared_data):
  path = _jsonl(tmp_path, [json.dumps({'group_id': 'g', 'lang': 'en', 'query': 'q',
                                       'positive': 'p'})])
  tsv = tmp_path / 'en.tsv'
  tsv.write_text('q1\tquery\tp1\tpassage\n')
  out = input_pipeline.load_sources([
      {'name': 'j', 'kind': 'jsonl', 'paths': [str(path)]},
      {'name': 't', 'kind': 'triples', 'files': {'en': str(tsv)}},
      {'name': 's', 'kind': 'squad', 'path': str(shared_data / 'mlqa-r'), 'langs': ['de']}])
  assert (len(out['j']), len(out['t']), len(out['s'])) == (1, 1, 512)
  with pytest.raises(ValueError, match="kind must be"):
    input_pipeline.load_sources([{'name': 'x', 'kind': 'csv'}])
