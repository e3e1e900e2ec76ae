"""hybrid_ir.data.squad: SQuAD-format QA folders (XQuAD-R, MLQA-R, own files) -> stores of
questions, answer sentences and paragraph negatives; identities joined across languages; the
paragraph fallback and skips; article folds that never leak; bad input named by file and path."""
import collections
import json

import pytest

from hybrid_ir.data import squad

from store_helpers import prep, rows_of  # tests/store_helpers.py


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


def test_answer_sentence_ends_are_exclusive_and_exactly_one_sentence_must_hold_the_start():
  breaks = [[0, 11], [12, 24], [24, 30]]
  assert [squad.answer_sentence(breaks, s, 'w') for s in (0, 10, 12, 23, 24, 29)] == [
      0, 0, 1, 1, 2, 2]
  with pytest.raises(ValueError, match=r'x\.json: qas\[3\]: answer_start 11 lies in 0 sentences'):
    squad.answer_sentence(breaks, 11, 'x.json: qas[3]')
  with pytest.raises(ValueError, match=r'w: answer_start 5 lies in 2 sentences of sentence_breaks '
                                       r'\[\[0, 11\], \[3, 8\]\]; expected exactly 1'):
    squad.answer_sentence([[0, 11], [3, 8]], 5, 'w')


def test_article_folds_keep_linked_articles_together_and_are_deterministic():
  # Articles A and B share question b (A in en, B in de): one component with a, b, c. C and D
  # stand alone, E holds e in two languages.
  items = [('a', 'en:A'), ('b', 'en:A'), ('b', 'de:B'), ('c', 'de:B'), ('d', 'en:C'),
           ('e', 'en:E'), ('e', 'de:E')]
  folds = squad.article_folds(items, num_folds=3, seed=0)
  assert sorted(folds) == ['a', 'b', 'c', 'd', 'e']
  assert folds['a'] == folds['b'] == folds['c']
  # Three components dealt round-robin to three folds: each fold gets exactly one.
  assert sorted({folds['a'], folds['d'], folds['e']}) == [0, 1, 2]
  assert squad.article_folds(items, 3, seed=0) == folds
  assert len({tuple(sorted(squad.article_folds(items, 3, seed=s).items())) for s in range(10)}) > 1
  with pytest.raises(ValueError, match='num_folds must be >= 2, got 1'):
    squad.article_folds(items, 1, seed=0)
  with pytest.raises(ValueError, match='3 linked article groups, fewer than num_folds=4'):
    squad.article_folds(items, 4, seed=0)


def test_settings_name_the_split_fold_and_files(tmp_path):
  folder = tmp_path / 'qa'
  folder.mkdir()
  for lang in ('en', 'de'):
    _squad_file(folder / f'{lang}.json', [_para([_qa('a', 0)])])
  assert squad.settings({'path': str(folder)}) == {'langs': ['de', 'en'], 'split': 'all'}
  assert squad.settings({'path': str(folder), 'split': 'heldout', 'fold': 2}) == {
      'langs': ['de', 'en'], 'split': 'heldout', 'num_folds': 5, 'fold': 2, 'split_seed': 0}
  assert squad.inputs({'files': {'en': 'x/en.json', 'de': 'y/de.json'}}) == [
      'y/de.json', 'x/en.json']
  with pytest.raises(ValueError, match=r"source 's': split must be 'all', 'train' or 'heldout', "
                                       r"got 'test'"):
    squad.settings({'name': 's', 'path': str(folder), 'split': 'test'})
  with pytest.raises(ValueError, match=r"source 's': fold 5 not in \[0, 5\)"):
    squad.settings({'name': 's', 'path': str(folder), 'split': 'train', 'fold': 5})
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match=r"source 's' \(squad\): no <lang>\.json files in"):
    squad.inputs({'name': 's', 'path': str(tmp_path / 'empty')})
  with pytest.raises(ValueError, match=r"`path` '.*nope' is not a directory"):
    squad.inputs({'name': 's', 'path': str(tmp_path / 'nope')})
