"""hybrid_ir.data.bitext: TSV bitext and Tatoeba files -> translation-ranking stores (groups are
ids, query = positive per language), with file:line errors and a counted skip budget."""
import gzip
import itertools

import pytest

from hybrid_ir import data
from hybrid_ir.data import bitext

_NAMES = itertools.count()


def _tsv(path, lines, gz=False):
  text = ''.join(l + '\n' for l in lines)
  if gz:
    with gzip.open(path, 'wt', encoding='utf-8') as f:
      f.write(text)
  else:
    path.write_text(text, encoding='utf-8')
  return str(path)


def _store(tmp_path, **cfg):
  cfg.setdefault('name', f'b{next(_NAMES)}')
  return data.open_store(cfg, tmp_path / 'stores', workers=1)


def _texts(store, lang):
  idx = store.index(lang)
  return {gid: (store.texts(lang, [int(q)])[0] if q >= 0 else None)
          for gid, q in zip(store.group_ids(range(store.num_groups)), idx.group_query)}


def test_rows_with_one_id_are_translations_across_files(tmp_path):
  a = _tsv(tmp_path / 'a.tsv.gz', ['id\tlang\ttext', 's1\ten\tGood morning', 's1\tde\tGuten Morgen',
                                   's2\ten\tThank you'], gz=True)
  b = _tsv(tmp_path / 'b.tsv', ['id\tlang\ttext', 's2\tfr\tMerci', 's3\tde\tHallo'])
  store = _store(tmp_path, kind='bitext', paths=[a, b])
  assert store.langs == ('de', 'en', 'fr') and not store.mono
  assert _texts(store, 'de') == {'s1': 'Guten Morgen', 's2': None, 's3': 'Hallo'}
  assert _texts(store, 'fr') == {'s1': None, 's2': 'Merci', 's3': None}
  idx = store.index('en')
  assert (idx.group_query == idx.group_positive).all()  # the same text is query and positive
  assert store.meta['counts']['texts en'] == 2
  assert bitext.inputs({'paths': a}) == [a]


def test_bad_lines_are_skipped_within_the_budget_and_named_beyond_it(tmp_path):
  lines = ['id\tlang\ttext', 's1\ten\tone', 's1\tde\t  ', 's2\ten', 's2\tde\tzwei', 's3\ten\tthree']
  path = _tsv(tmp_path / 'b.tsv', lines)
  with pytest.raises(ValueError, match=r"b\.tsv:3: expected three non-empty tab-separated fields "
                     r"\(id, lang, text\), got 's1\\tde'"):
    _store(tmp_path, kind='bitext', paths=[path], max_bad_lines=0)
  store = _store(tmp_path, kind='bitext', paths=[path], max_bad_lines=2)
  assert store.meta['counts']['bad lines (skipped)'] == 2
  assert _texts(store, 'de') == {'s1': None, 's2': 'zwei', 's3': None}
  with open(path, 'ab') as f:
    f.write(b's4\ten\tbad \xff byte\n')
  with pytest.raises(ValueError, match=r'b\.tsv:7: invalid UTF-8 at byte 11 of the line'):
    _store(tmp_path, kind='bitext', paths=[path], max_bad_lines=2)


def test_a_second_text_of_one_id_and_language_names_both_places(tmp_path):
  path = _tsv(tmp_path / 'b.tsv', ['id\tlang\ttext', 's1\ten\tone', 's1\tde\teins',
                                   's1\ten\tuno'])
  with pytest.raises(ValueError, match=r"b\.tsv:4: id 's1' has a second 'en' text \(first at "
                     r".*b\.tsv:2\)"):
    _store(tmp_path, kind='bitext', paths=[path])


def test_tatoeba_line_pairs_language_codes_and_errors(tmp_path):
  folder = tmp_path / 'tatoeba'
  folder.mkdir()
  _tsv(folder / 'tatoeba.deu-eng.deu', ['Hallo', 'Danke'])
  _tsv(folder / 'tatoeba.deu-eng.eng', ['Hello', 'Thanks'])
  _tsv(folder / 'tatoeba.xho-eng.xho', ['Molo'])
  _tsv(folder / 'tatoeba.xho-eng.eng', ['Hello'])
  store = _store(tmp_path, kind='tatoeba', path=str(folder), langs=['deu', 'xho'])
  assert store.langs == ('de', 'en', 'xho')  # ISO 639-1 where there is one, else the 3 letters
  assert _texts(store, 'de') == {'deu-eng:0': 'Hallo', 'deu-eng:1': 'Danke', 'xho-eng:0': None}
  assert _texts(store, 'en') == {'deu-eng:0': 'Hello', 'deu-eng:1': 'Thanks', 'xho-eng:0': 'Hello'}
  assert store.meta['counts']['deu-eng pairs'] == 2
  _tsv(folder / 'tatoeba.xho-eng.eng', ['Hello', 'Extra'])
  with pytest.raises(ValueError, match=r'tatoeba\.xho-eng\.xho has 1 lines but .*\.eng has 2'):
    _store(tmp_path, kind='tatoeba', path=str(folder), langs=['xho'])
  _tsv(folder / 'tatoeba.xho-eng.eng', [' '])
  with pytest.raises(ValueError, match=r'tatoeba\.xho-eng\.eng:1: empty line'):
    _store(tmp_path, kind='tatoeba', path=str(folder), langs=['xho'])
  with pytest.raises(ValueError, match=r"needs `path` .* and `langs`"):
    bitext.inputs({'kind': 'tatoeba', 'name': 't', 'path': str(folder)})
