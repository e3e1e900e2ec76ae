"""Training sources -> prepared stores: SQuAD/LAReQA (+ article folds), mMARCO, JSONL, bitext,
Tatoeba; passage identities; stale and half-written stores; bad input named by file and line."""
import collections
import gzip
import itertools
import json
import os

import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir.data import squad
from hybrid_ir.data import store as store_lib

import synthetic_mmarco  # tests/synthetic_mmarco.py


_NAMES = itertools.count()


def prep(tmp_path, **cfg):
  cfg.setdefault('name', f'src{next(_NAMES)}')  # a fresh store unless the test names one
  return data.open_store(cfg, tmp_path / 'stores', workers=1)


def rows_of(store, lang, group):
  idx = store.index(lang)
  return int(idx.group_query[group]), int(idx.group_positive[group])


# --- identities: connected components ---

def test_components_match_a_plain_union_find():
  rng = np.random.default_rng(0)
  n = 500
  a, b = rng.integers(0, n, 300), rng.integers(0, n, 300)
  parent = list(range(n))

  def find(x):
    while parent[x] != x:
      x = parent[x]
    return x

  for x, y in zip(a, b):
    parent[find(x)] = find(y)
  comp = store_lib.components(n, a, b)
  for i in range(n):
    for j in (rng.integers(0, n, 20)):
      assert (comp[i] == comp[j]) == (find(i) == find(j))
  assert all(comp[i] == min(k for k in range(n) if find(k) == find(i)) for i in range(0, n, 37))


# --- SQuAD / LAReQA ---

def test_xquad_r_store_holds_questions_answer_sentences_and_paragraph_negatives(
    tmp_path, shared_data):
  store = prep(tmp_path, kind='squad', path=str(shared_data / 'xquad-r'))
  assert store.num_groups == 1190 and len(store.langs) == 11
  raw = json.loads((shared_data / 'xquad-r' / 'de.json').read_text())
  by_id = {qa['id']: (para, qa) for art in raw['data'] for para in art['paragraphs']
           for qa in para['qas']}
  ids = store.group_ids(range(store.num_groups))
  assert ids == sorted(by_id)
  for g in range(0, 1190, 37):
    para, qa = by_id[ids[g]]
    start = qa['answers'][0]['answer_start']
    k, = [i for i, (s, e) in enumerate(para['sentence_breaks']) if s <= start < e]
    q_row, p_row = rows_of(store, 'de', g)
    assert store.texts('de', [q_row, p_row]) == [qa['question'], para['sentences'][k]]
    negatives = store.texts('de', store.negatives('de', g))
    assert negatives == [s for i, s in enumerate(para['sentences']) if i != k]


def _squad_file(path, paragraphs, title='t'):
  path.write_text(json.dumps({'version': '1.1', 'data': [{'title': title,
                                                          'paragraphs': paragraphs}]}))
  return path


def _para(qas, sentences=('Alpha beta.', 'Gamma delta.', 'Eps zeta.')):
  context = ' '.join(sentences)
  breaks, pos = [], 0
  for s in sentences:
    breaks.append([pos, pos + len(s)])
    pos += len(s) + 1
  return {'context': context, 'sentences': list(sentences), 'sentence_breaks': breaks,
          'qas': qas}


def _qa(qid, start, impossible=False):
  answers = [] if impossible else [{'answer_start': start, 'text': 'x'}]
  return {'id': qid, 'question': f'question {qid}?', 'answers': answers,
          'is_impossible': impossible}


def test_squad_identity_joins_questions_that_share_an_answer_in_any_language(tmp_path):
  folder = tmp_path / 'qa'
  folder.mkdir()
  # en: a and b share sentence 0; c answers sentence 2. de: b and c share sentence 1, so c
  # is linked to a through b; d stands alone.
  _squad_file(folder / 'en.json', [_para([_qa('a', 0), _qa('b', 1), _qa('c', 25)]),
                                   _para([_qa('d', 0)], sentences=('Other one.', 'Two.'))])
  _squad_file(folder / 'de.json', [_para([_qa('a', 0), _qa('b', 12), _qa('c', 13)]),
                                   _para([_qa('d', 0)], sentences=('Anderer eins.', 'Zwei.'))])
  store = prep(tmp_path, kind='squad', path=str(folder))
  ident = dict(zip(store.group_ids(range(4)), store.group_identity.tolist()))
  assert ident['a'] == ident['b'] == ident['c'] != ident['d']
  # A negative that is nobody's answer has an identity of its own.
  en = store.index('en')
  neg_rows = store.negatives('en', 3)
  assert store.texts('en', neg_rows) == ['Two.']
  assert en.row_identity[neg_rows[0]] not in set(ident.values())


def test_squad_paragraph_fallback_skip_and_errors(tmp_path):
  folder = tmp_path / 'plain'
  folder.mkdir()
  plain = [{'context': 'Alpha beta. Gamma delta.', 'qas': [_qa('a', 12), _qa('b', 0, True)]},
           {'context': 'Second paragraph.', 'qas': [_qa('c', 0)]}]
  _squad_file(folder / 'en.json', plain)
  store = prep(tmp_path, kind='squad', path=str(folder))
  assert store.group_ids(range(store.num_groups)) == ['a', 'c']  # b is unanswerable
  q, p = rows_of(store, 'en', 0)
  assert store.texts('en', [p]) == ['Alpha beta. Gamma delta.']  # the paragraph is the passage
  assert store.texts('en', store.negatives('en', 0)) == ['Second paragraph.']  # the article's
  counts = store.meta['counts']['en']
  assert counts['unanswerable (skipped)'] == 1
  assert counts['paragraph passages (no sentence_breaks)'] == 2

  def fails(paragraphs, match):
    bad = tmp_path / 'bad'
    bad.mkdir(exist_ok=True)
    _squad_file(bad / 'x.json', paragraphs)
    with pytest.raises(ValueError, match=match):
      prep(tmp_path, kind='squad', path=str(bad))

  where = r'x\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]'
  fails([_para([_qa('a', 11)])], where + '.*lies in 0 sentences')  # the space between two
  fails([_para([_qa('a', 1), _qa('a', 2)])], r"qas\[1\]: duplicate question id 'a'")
  fails([_para([_qa('a', 99)])], where + r': answers\[0\]\.answer_start 99 outside')
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'z.json').write_text('{"data": [\n  {"title": }\n]}')
  with pytest.raises(ValueError, match=r'z\.json:2: invalid JSON'):
    prep(tmp_path, kind='squad', path=str(broken))


@pytest.mark.parametrize('dataset', ['xquad-r', 'mlqa-r'])
def test_article_folds_do_not_leak(tmp_path, shared_data, dataset):
  directory = shared_data / dataset
  langs = sorted(p.stem for p in directory.glob('*.json'))
  counts = collections.Counter()
  parsed = {l: squad.read_squad_file(directory / f'{l}.json', l, counts)[1] for l in langs}
  article_of = collections.defaultdict(set)  # group id -> its article keys, in every language
  for l in langs:
    for qid, (_, _, _, article) in parsed[l].items():
      article_of[qid].add(article)

  def groups(split, fold, seed=0):
    store = prep(tmp_path, kind='squad', path=str(directory), split=split, num_folds=5,
                 fold=fold, split_seed=seed, name=f'{split}{fold}{seed}')
    return set(store.group_ids(range(store.num_groups)))

  heldout_union = set()
  for fold in range(5):
    train, held = groups('train', fold), groups('heldout', fold)
    assert train and held and not train & held and train | held == set(article_of)
    # No article (in any language) contributes to both sides.
    assert not set().union(*(article_of[g] for g in train)) & set().union(
        *(article_of[g] for g in held))
    assert not heldout_union & held
    heldout_union |= held
  assert heldout_union == set(article_of)  # the folds partition the set
  assert groups('heldout', 0, seed=1) != groups('heldout', 0)


# --- mMARCO ---

def _write(path, lines, gz=False):
  path.parent.mkdir(parents=True, exist_ok=True)
  text = ''.join(l + '\n' for l in lines)
  if gz:
    with gzip.open(path, 'wt') as f:
      f.write(text)
  else:
    path.write_text(text)
  return str(path)


def _mmarco(tmp_path, triples=None, de_collection=None, **extra):
  m = tmp_path / 'mm'
  coll = {'en': ['10\tpassage ten', '7\tpassage seven', '3\tpassage three', '99\tnever used'],
          'de': de_collection or ['3\tpassage drei', '7\tpassage sieben', '10\tpassage zehn']}
  queries = {'en': ['1\tquery one', '2\tquery two'], 'de': ['2\tfrage zwei', '1\tfrage eins']}
  cfg = dict(kind='mmarco', **extra,
             collections={l: _write(m / 'collections' / f'{l}.tsv', v) for l, v in coll.items()},
             queries={l: _write(m / 'queries' / f'{l}.tsv', v) for l, v in queries.items()},
             triples=_write(m / 'triples.tsv.gz', triples or [
                 '1\t10\t3', '1\t10\t7', '1\t10\t3', '2\t7\t10', '2\t3\t10'], gz=True))
  return cfg


def test_mmarco_layout_to_an_aligned_store(tmp_path):
  store = prep(tmp_path, **_mmarco(tmp_path))
  assert store.aligned and store.langs == ('de', 'en')
  # Groups: (qid, positive pid), sorted; query 2 has two positives.
  assert store.group_ids(range(store.num_groups)) == ['1:10', '2:3', '2:7']
  texts = {l: [store.texts(l, rows_of(store, l, g)) for g in range(3)] for l in ('en', 'de')}
  assert texts['en'] == [['query one', 'passage ten'], ['query two', 'passage three'],
                         ['query two', 'passage seven']]
  assert texts['de'] == [['frage eins', 'passage zehn'], ['frage zwei', 'passage drei'],
                         ['frage zwei', 'passage sieben']]
  # Negatives deduplicated per group, as passage rows shared by every language.
  assert store.texts('en', store.negatives('en', 0)) == ['passage three', 'passage seven']
  assert store.texts('de', store.negatives('de', 1)) == ['passage zehn']
  # Identities: the two positives of query 2 are one; query 1's positive another.
  ident = store.group_identity
  assert ident[1] == ident[2] != ident[0]
  idx = store.index('en')
  assert idx.row_identity[store.negatives('en', 1)[0]] == ident[0]  # pid 10 = group 0's positive
  counts = store.meta['counts']
  assert (counts['triples'], counts['groups'], counts['passages'], counts['queries']) == (
      5, 3, 3, 2)


def test_mmarco_missing_passage_in_a_language_is_an_error(tmp_path):
  cfg = _mmarco(tmp_path, de_collection=['3\tpassage drei', '10\tpassage zehn'])
  with pytest.raises(ValueError, match=r'mmarco de: 0 query ids and 1 passage ids .* pids \[7\] '
                                       r'not in .*collections/de\.tsv'):
    prep(tmp_path, **cfg)
  assert not list((tmp_path / 'stores').glob('*/meta.json'))  # nothing half-made is left


def test_mmarco_bad_lines_are_named_or_skipped_within_the_budget(tmp_path):
  triples = ['1\t10\t3', '1\t10', '2\t7\tx', '2\t7\t10']
  with pytest.raises(ValueError, match=r'triples\.tsv\.gz:2: expected qid<TAB>positive pid'):
    prep(tmp_path, **_mmarco(tmp_path, triples=triples))
  store = prep(tmp_path, **_mmarco(tmp_path, triples=triples, max_bad_lines=2))
  assert store.meta['counts']['bad triples lines (skipped)'] == 2
  assert store.meta['counts']['first bad lines'] == [2, 3]
  assert store.num_groups == 2
  bad = ['3\tpassage drei', '7\t', '10\tpassage zehn']
  with pytest.raises(ValueError, match=r'collections/de\.tsv:2: expected id<TAB>text'):
    prep(tmp_path, **_mmarco(tmp_path, de_collection=bad))


def test_mmarco_synthetic_rows_are_aligned_across_languages(tmp_path):
  cfg = synthetic_mmarco.write_synthetic(tmp_path / 'syn', 3000, langs=('en', 'de'))
  store = data.open_store(dict(cfg, name='syn'), tmp_path / 'stores', workers=2)
  for g in range(0, store.num_groups, 7):
    qid, pid = store.group_ids([g])[0].split(':')
    for lang in ('en', 'de'):
      q, p = store.texts(lang, rows_of(store, lang, g))
      assert q.split()[:2] == [qid, lang] and p.split()[:2] == [pid, lang]


# --- JSONL ---

def _jsonl(tmp_path, records):
  path = tmp_path / 'r.jsonl'
  path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in records))
  return str(path)


def _rec(g, lang, **kw):
  return dict(group_id=g, lang=lang, query=f'q {g} {lang}', positive=f'p {g} {lang}', **kw)


def test_jsonl_store_pools_negatives_and_keys_identity(tmp_path):
  path = _jsonl(tmp_path, [
      _rec('g1', 'en', negatives=['n1']), '', _rec('g1', 'en', negatives=['n2', 'n1']),
      _rec('g1', 'de'), _rec('g2', 'en', positive_id='P'), _rec('g3', 'de', positive_id='P'),
      dict(_rec('g4', 'en'), positive='P G1 EN')])  # the same text as g1's positive
  store = prep(tmp_path, kind='jsonl', paths=[path])
  assert store.group_ids(range(4)) == ['g1', 'g2', 'g3', 'g4']
  assert store.texts('en', store.negatives('en', 0)) == ['n1', 'n2']
  ident = store.group_identity
  assert ident[1] == ident[2]  # one positive_id in two languages
  assert ident[0] == ident[3]  # equal normalised text
  assert ident[0] != ident[1]
  assert store.meta['counts']['blank lines (skipped)'] == 1


@pytest.mark.parametrize('line, match', [
    ('{"group_id": "g", ', r'r\.jsonl:2: invalid JSON'),
    ('{"group_id": "g", "lang": "en", "query": "q"}', r"r\.jsonl:2: field 'positive' must be"),
    ('{"group_id": "g", "lang": "en", "query": "", "positive": "p"}',
     r"r\.jsonl:2: field 'query' must be a non-empty string"),
    ('{"group_id": "g", "lang": "en", "query": "q", "positive": "p", "score": 1}',
     r"r\.jsonl:2: unknown record fields \['score'\]"),
    ('{"group_id": "g", "lang": "en", "query": "q", "positive": "p", "negatives": [""]}',
     r'r\.jsonl:2: negatives\[0\]'),
    ('{"group_id": "a", "lang": "en", "query": "other", "positive": "p"}',
     r"r\.jsonl:2: group 'a' lang 'en' has another query or positive than at .*r\.jsonl:1"),
])
def test_jsonl_malformed(tmp_path, line, match):
  good = json.dumps({'group_id': 'a', 'lang': 'en', 'query': 'q', 'positive': 'p'})
  with pytest.raises(ValueError, match=match):
    prep(tmp_path, kind='jsonl', paths=[_jsonl(tmp_path, [good, line])])


def test_jsonl_skip_budget_counts_what_it_skips(tmp_path):
  path = _jsonl(tmp_path, [_rec('a', 'en'), '{"broken', _rec('b', 'en')])
  store = prep(tmp_path, kind='jsonl', paths=[path], max_bad_lines=1)
  assert store.num_groups == 2 and store.meta['counts']['bad lines (skipped)'] == 1
  assert store.meta['counts']['first bad lines'][0].endswith('r.jsonl:2')


# --- bitext, Tatoeba ---

def test_bitext_store_and_repeated_verses(tmp_path):
  path = tmp_path / 'b.tsv.gz'
  _write(path, ['id\tlang\ttext', 'v1\ten\tHe spoke, saying,', 'v1\tde\tEr sprach:',
                'v2\ten\tHe  spoke, SAYING,', 'v2\tde\tEr redete:', 'v3\tes\tHola'], gz=True)
  store = prep(tmp_path, kind='bitext', paths=[str(path)])
  assert not store.mono and store.langs == ('de', 'en', 'es')
  q, p = rows_of(store, 'de', 0)
  assert q == p and store.texts('de', [q]) == ['Er sprach:']
  ident = store.group_identity
  assert ident[0] == ident[1] != ident[2]  # the same English text (normalised)
  bad = tmp_path / 'bad.tsv'
  _write(bad, ['id\tlang\ttext', 'v1\ten\tok', 'v2\ten'])
  with pytest.raises(ValueError, match=r'bad\.tsv:3: expected three non-empty'):
    prep(tmp_path, kind='bitext', paths=[str(bad)])
  _write(bad, ['id\ttext', 'v1\tok'])
  with pytest.raises(ValueError, match=r'bad\.tsv:1: expected the header'):
    prep(tmp_path, kind='bitext', paths=[str(bad)])


def test_tatoeba_pairs_and_language_codes(tmp_path, shared_data):
  store = prep(tmp_path, kind='tatoeba', path=str(shared_data / 'tatoeba'), langs=['deu', 'cmn'])
  assert store.langs == ('de', 'en', 'zh') and store.num_groups == 2000
  de = (shared_data / 'tatoeba' / 'tatoeba.deu-eng.deu').read_text().split('\n')
  en = (shared_data / 'tatoeba' / 'tatoeba.deu-eng.eng').read_text().split('\n')
  g = store.group_ids(range(store.num_groups)).index('deu-eng:5')
  assert store.texts('de', [rows_of(store, 'de', g)[0]]) == [de[5]]
  assert store.texts('en', [rows_of(store, 'en', g)[0]]) == [en[5]]
  assert rows_of(store, 'zh', g) == (-1, -1)
  with pytest.raises(ValueError, match=r"no tatoeba\.xxx-eng\.xxx.*languages there: \[.*'deu'"):
    prep(tmp_path, kind='tatoeba', path=str(shared_data / 'tatoeba'), langs=['xxx'])


# --- stores: stale, explicit, half-written ---

def test_stores_are_keyed_by_content_and_an_explicit_store_of_other_data_is_refused(tmp_path):
  path = _jsonl(tmp_path, [_rec('a', 'en'), _rec('b', 'en')])
  first = prep(tmp_path, kind='jsonl', paths=[path], name='j')
  assert first.directory == tmp_path / 'stores' / f'j-{first.fingerprint}'
  # Other settings make another store; the first stays.
  other = prep(tmp_path, kind='jsonl', paths=[path], name='j', max_bad_lines=3)
  assert other.directory != first.directory and store_lib.is_store(first.directory)
  # A fresh copy of the same bytes (only the mtime is new) is the same data: the same store,
  # with the fingerprint a checkpoint's input state is checked against.
  os.utime(path, (1, 1))
  again = prep(tmp_path, kind='jsonl', paths=[path], name='j')
  assert again.directory == first.directory and again.fingerprint == first.fingerprint
  # New content of the same size and mtime is other data: another store.
  text = open(path).read()
  open(path, 'w').write(text.replace('"a"', '"c"', 1))
  os.utime(path, (1, 1))
  changed = prep(tmp_path, kind='jsonl', paths=[path], name='j')
  assert changed.fingerprint != first.fingerprint and changed.directory != first.directory
  # An explicit store is used whatever its content, but one of other data is refused in one
  # short line that says what differs and how to rebuild it.
  explicit = tmp_path / 'my_store'
  prep(tmp_path, kind='jsonl', paths=[path], store=str(explicit))
  open(path, 'w').write(text)
  with pytest.raises(store_lib.StoreError) as e:
    prep(tmp_path, kind='jsonl', paths=[path], store=str(explicit))
  msg = str(e.value)
  assert '\n' not in msg and len(msg) < 400, msg
  assert f'the store {explicit} was prepared from other data' in msg and 'content of r.jsonl' in msg
  assert 'python -m hybrid_ir.prepare --config <config> --overwrite' in msg
  # Prepared again from the same contents elsewhere, a store has the same fingerprint.
  moved = tmp_path / 'moved.jsonl'
  os.rename(path, moved)
  assert prep(tmp_path, kind='jsonl', paths=[str(moved)], name='k').fingerprint == first.fingerprint
  # A host without the raw files uses the store as prepared: an explicit one, or the one store
  # of that name in the store folder; several are named, for the user to choose.
  assert prep(tmp_path, kind='jsonl', paths=[path], store=str(explicit)).num_groups == 2
  assert prep(tmp_path, kind='jsonl', paths=[path], name='k').directory.name.startswith('k-')
  with pytest.raises(store_lib.StoreError, match=r"holds 3 stores of it \(j-.*name the one"):
    prep(tmp_path, kind='jsonl', paths=[path], name='j')


def test_preparation_that_dies_leaves_nothing_training_would_read(tmp_path, monkeypatch):
  path = _jsonl(tmp_path, [_rec('a', 'en'), _rec('b', 'en')])
  cfg = dict(name='j', kind='jsonl', paths=[path])
  target = data.store_path(cfg, tmp_path / 'stores')

  def dies(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(store_lib.Builder, 'finish', dies)
  with pytest.raises(KeyboardInterrupt):
    data.open_store(cfg, tmp_path / 'stores')
  # Nothing but the input digests' cache: no store, no temporary folder.
  assert not target.exists()
  assert [p.name for p in (tmp_path / 'stores').iterdir()] == [data.DIGEST_CACHE]
  # A folder left by kill -9 (no meta.json) is never read as a store.
  (target / 'texts').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='not a complete store'):
    store_lib.Store(target)
  monkeypatch.undo()
  with pytest.raises(FileNotFoundError, match="prepare' is 'never'|no prepared store"):
    data.open_store(cfg, tmp_path / 'stores', prepare='never')
  assert data.open_store(cfg, tmp_path / 'stores').num_groups == 2


def test_unknown_kind_and_missing_file(tmp_path):
  with pytest.raises(ValueError, match=r"kind 'csv'; known: \['bitext', 'jsonl', 'mmarco'"):
    prep(tmp_path, kind='csv')
  with pytest.raises(FileNotFoundError, match='training source file not found: .*nope.jsonl'):
    prep(tmp_path, kind='jsonl', paths=[str(tmp_path / 'nope.jsonl')])
