"""hybrid_ir.data.bitext: TSV bitext and Tatoeba files -> translation-ranking stores (groups are
ids, query = positive per language, identities by normalised text), with file:line errors and a
counted skip budget; Tatoeba's line pairs and language codes, on its files and on the real ones."""
import pytest

from hybrid_ir.data import bitext

from store_helpers import prep, rows_of, write_lines  # tests/store_helpers.py


def _texts(store, lang):
  idx = store.index(lang)
  return {gid: (store.texts(lang, [int(q)])[0] if q >= 0 else None)
          for gid, q in zip(store.group_ids(range(store.num_groups)), idx.group_query)}


def test_rows_with_one_id_are_translations_across_files(tmp_path):
  a = write_lines(tmp_path / 'a.tsv.gz', ['id\tlang\ttext', 's1\ten\tGood morning',
                                         's1\tde\tGuten Morgen', 's2\ten\tThank you'], gz=True)
  b = write_lines(tmp_path / 'b.tsv', ['id\tlang\ttext', 's2\tfr\tMerci', 's3\tde\tHallo'])
  store = prep(tmp_path, kind='bitext', paths=[a, b])
  assert store.langs == ('de', 'en', 'fr') and not store.mono
  assert _texts(store, 'de') == {'s1': 'Guten Morgen', 's2': None, 's3': 'Hallo'}
  assert _texts(store, 'fr') == {'s1': None, 's2': 'Merci', 's3': None}
  idx = store.index('en')
  assert (idx.group_query == idx.group_positive).all()  # the same text is query and positive
  assert store.meta['counts']['texts en'] == 2
  assert bitext.inputs({'paths': a}) == [a]


def test_bad_lines_are_skipped_within_the_budget_and_named_beyond_it(tmp_path):
  lines = ['id\tlang\ttext', 's1\ten\tone', 's1\tde\t  ', 's2\ten', 's2\tde\tzwei', 's3\ten\tthree']
  path = write_lines(tmp_path / 'b.tsv', lines)
  with pytest.raises(ValueError, match=r"b\.tsv:3: expected three non-empty tab-separated fields "
                     r"\(id, lang, text\), got 's1\\tde'"):
    prep(tmp_path, kind='bitext', paths=[path], max_bad_lines=0)
  store = prep(tmp_path, kind='bitext', paths=[path], max_bad_lines=2)
  assert store.meta['counts']['bad lines (skipped)'] == 2
  assert _texts(store, 'de') == {'s1': None, 's2': 'zwei', 's3': None}
  with open(path, 'ab') as f:
    f.write(b's4\ten\tbad \xff byte\n')
  with pytest.raises(ValueError, match=r'b\.tsv:7: invalid UTF-8 at byte 11 of the line'):
    prep(tmp_path, kind='bitext', paths=[path], max_bad_lines=2)


def test_a_second_text_of_one_id_and_language_names_both_places(tmp_path):
  path = write_lines(tmp_path / 'b.tsv', ['id\tlang\ttext', 's1\ten\tone', 's1\tde\teins',
                                          's1\ten\tuno'])
  with pytest.raises(ValueError, match=r"b\.tsv:4: id 's1' has a second 'en' text \(first at "
                     r".*b\.tsv:2\)"):
    prep(tmp_path, kind='bitext', paths=[path])


def test_tatoeba_line_pairs_language_codes_and_errors(tmp_path):
  folder = tmp_path / 'tatoeba'
  folder.mkdir()
  write_lines(folder / 'tatoeba.deu-eng.deu', ['Hallo', 'Danke'])
  write_lines(folder / 'tatoeba.deu-eng.eng', ['Hello', 'Thanks'])
  write_lines(folder / 'tatoeba.xho-eng.xho', ['Molo'])
  write_lines(folder / 'tatoeba.xho-eng.eng', ['Hello'])
  store = prep(tmp_path, kind='tatoeba', path=str(folder), langs=['deu', 'xho'])
  assert store.langs == ('de', 'en', 'xho')  # ISO 639-1 where there is one, else the 3 letters
  assert _texts(store, 'de') == {'deu-eng:0': 'Hallo', 'deu-eng:1': 'Danke', 'xho-eng:0': None}
  assert _texts(store, 'en') == {'deu-eng:0': 'Hello', 'deu-eng:1': 'Thanks', 'xho-eng:0': 'Hello'}
  assert store.meta['counts']['deu-eng pairs'] == 2
  write_lines(folder / 'tatoeba.xho-eng.eng', ['Hello', 'Extra'])
  with pytest.raises(ValueError, match=r'tatoeba\.xho-eng\.xho has 1 lines but .*\.eng has 2'):
    prep(tmp_path, kind='tatoeba', path=str(folder), langs=['xho'])
  write_lines(folder / 'tatoeba.xho-eng.eng', [' '])
  with pytest.raises(ValueError, match=r'tatoeba\.xho-eng\.eng:1: empty line'):
    prep(tmp_path, kind='tatoeba', path=str(folder), langs=['xho'])
  with pytest.raises(ValueError, match=r"needs `path` .* and `langs`"):
    bitext.inputs({'kind': 'tatoeba', 'name': 't', 'path': str(folder)})


def test_bitext_store_and_repeated_verses(tmp_path):
  path = tmp_path / 'b.tsv.gz'
  write_lines(path, ['id\tlang\ttext', 'v1\ten\tHe spoke, saying,', 'v1\tde\tEr sprach:',
                     'v2\ten\tHe  spoke, SAYING,', 'v2\tde\tEr redete:', 'v3\tes\tHola'], gz=True)
  store = prep(tmp_path, kind='bitext', paths=[str(path)])
  assert not store.mono and store.langs == ('de', 'en', 'es')
  q, p = rows_of(store, 'de', 0)
  assert q == p and store.texts('de', [q]) == ['Er sprach:']
  ident = store.group_identity
  assert ident[0] == ident[1] != ident[2]  # the same English text (normalised)
  bad = tmp_path / 'bad.tsv'
  write_lines(bad, ['id\tlang\ttext', 'v1\ten\tok', 'v2\ten'])
  with pytest.raises(ValueError, match=r'bad\.tsv:3: expected three non-empty'):
    prep(tmp_path, kind='bitext', paths=[str(bad)])
  write_lines(bad, ['id\ttext', 'v1\tok'])
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
