"""LAReQA reader: counts of the real sets, the answer-sentence rule, and clear errors."""
import json

import numpy as np
import pytest

from hybrid_ir.data import lareqa


def test_xquad_r_counts(shared_data):
  d = lareqa.load_lareqa(shared_data, 'xquad-r')
  assert d.langs == lareqa.LANGS['xquad-r'] and len(d.langs) == 11
  assert d.num_questions == 11 * 1190 and len(set(d.question_ids)) == 1190
  assert np.bincount(d.question_lang).tolist() == [1190] * 11
  assert d.num_candidates == 13014
  # Every question has one relevant sentence per language, in that language.
  assert (d.relevant_by_lang >= 0).all()
  assert (d.cand_lang[d.relevant_by_lang] == np.arange(11)[None, :]).all()
  # The own-language relevant item is the question's own answer.
  assert (d.relevant_by_lang[np.arange(d.num_questions), d.question_lang] == d.answer).all()
  # Candidates are contiguous per language.
  assert (np.diff(d.cand_lang) >= 0).all()


def test_mlqa_r_counts(shared_data):
  d = lareqa.load_lareqa(shared_data, 'mlqa-r')
  assert d.num_questions == 4199 and len(set(d.question_ids)) == 1148
  assert d.num_candidates == 20534
  n_rel = (d.relevant_by_lang >= 0).sum(axis=1)
  assert n_rel.min() == 2 and n_rel.max() == 4
  en = d.langs.index('en')
  assert (d.relevant_by_lang[:, en] >= 0).all()  # every id has an English version
  # Relevance is symmetric across the versions of an id.
  for q in range(0, d.num_questions, 97):
    for c in d.relevant(q):
      other = np.flatnonzero((np.array(d.question_ids) == d.question_ids[q]) &
                             (d.question_lang == d.cand_lang[c]))
      assert len(other) == 1 and d.answer[other[0]] == c


def test_language_subset_and_context_option(shared_data):
  d = lareqa.load_lareqa(shared_data, 'xquad-r', langs=['en', 'de'],
                         candidate_text='sentence+context')
  assert d.langs == ('en', 'de') and d.num_questions == 2380
  assert d.relevant_by_lang.shape == (2380, 2)
  text = d.cand_text[0]
  assert text.startswith(d.cand_sentence[0] + ' ') and text.endswith(d.cand_context[0])


def _write(folder, lang, paragraphs, title='T'):
  folder.mkdir(parents=True, exist_ok=True)
  doc = {'version': '1.1', 'data': [{'title': title, 'paragraphs': paragraphs}]}
  (folder / f'{lang}.json').write_text(json.dumps(doc), encoding='utf-8')


def _para(sentences, qas, sep=' '):
  context, breaks = '', []
  for s in sentences:
    start = len(context) + (len(sep) if context else 0)
    context = (context + sep if context else '') + s
    breaks.append([start, start + len(s)])
  return {'context': context, 'sentences': sentences, 'sentence_breaks': breaks,
          'qas': [{'id': i, 'question': q, 'answers': [{'answer_start': a, 'text': 'x'}]}
                  for i, q, a in qas]}


def _tiny(tmp_path, en_qas=(('q1', 'Where?', 4),), de_sentences=('Eins.', 'Zwei.', 'Eins.')):
  # en: 'Aaa.' [0,4) ' Bbbb.' [5,10); answer_start 4 is the space after sentence 0, which only
  # an inclusive end would assign to sentence 0; with [start, end) it is in no sentence.
  _write(tmp_path / 'xquad-r', 'en', [_para(['Aaa.', 'Bbbb.'], list(en_qas))])
  # de: touching breaks 'Eins.' [0,5) 'Zwei.' [5,10) 'Eins.' [10,15); answer_start 5 is the end
  # of sentence 0 and the start of sentence 1: only sentence 1 under [start, end).
  _write(tmp_path / 'xquad-r', 'de', [_para(list(de_sentences), [('q1', 'Wo?', 5)], sep='')])
  return tmp_path


def test_half_open_breaks_and_duplicates(tmp_path):
  _tiny(tmp_path, en_qas=[('q1', 'Where?', 5)])  # 5 = start of sentence 1
  d = lareqa.load_lareqa(tmp_path, 'xquad-r', langs=['en', 'de'])
  assert d.cand_sentence == ['Aaa.', 'Bbbb.', 'Eins.', 'Zwei.', 'Eins.']  # duplicate kept
  assert d.answer.tolist() == [1, 3]  # en 5 -> 'Bbbb.'; de 5 -> 'Zwei.', not 'Eins.'
  assert d.relevant_by_lang.tolist() == [[1, 3], [1, 3]]
  assert d.num_relevant_pairs == 4


def test_errors_name_file_and_field(tmp_path):
  root = _tiny(tmp_path)
  with pytest.raises(ValueError, match=r"en.json.*q1.*answer_start 4 lies in 0 sentences"):
    lareqa.load_lareqa(root, 'xquad-r', langs=['en'])
  with pytest.raises(ValueError, match=r"unknown language.*'xx'.*available.*'ar'"):
    lareqa.load_lareqa(root, 'xquad-r', langs=['en', 'xx'])
  with pytest.raises(FileNotFoundError, match=r'xquad-r/el.json'):
    lareqa.load_lareqa(root, 'xquad-r', langs=['el'])
  _tiny(tmp_path, en_qas=[('q1', '  ', 0)])
  with pytest.raises(ValueError, match=r'en.json.*qas\[0\].question.*empty'):
    lareqa.load_lareqa(root, 'xquad-r', langs=['en'])
  _tiny(tmp_path, de_sentences=('Eins.', '', 'Drei.'))
  with pytest.raises(ValueError, match=r'de.json.*sentences\[1\] is empty'):
    lareqa.load_lareqa(root, 'xquad-r', langs=['de'])
  (root / 'xquad-r' / 'de.json').write_text('{"data": [', encoding='utf-8')
  with pytest.raises(ValueError, match=r'de.json:\d+: invalid JSON'):
    lareqa.load_lareqa(root, 'xquad-r', langs=['de'])
  (root / 'xquad-r' / 'de.json').write_text('{"data": [{"title": "T"}]}', encoding='utf-8')
  with pytest.raises(ValueError, match=r'de.json: missing field data\[0\].paragraphs'):
    lareqa.load_lareqa(root, 'xquad-r', langs=['de'])
  with pytest.raises(ValueError, match=r"unknown LAReQA set 'foo'"):
    lareqa.load_lareqa(root, 'foo')
