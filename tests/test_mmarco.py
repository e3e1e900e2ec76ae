"""hybrid_ir.data.mmarco: mMARCO's collections, queries and id triples -> an aligned store
(groups, deduplicated negatives, identities); a passage missing in one language and bad lines
named by file and line, or skipped within the budget; the synthetic fixture's rows aligned."""
import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir.data import mmarco

import synthetic_mmarco  # tests/synthetic_mmarco.py
from store_helpers import prep, rows_of, write_lines  # tests/store_helpers.py


def _mmarco(tmp_path, triples=None, de_collection=None, **extra):
  m = tmp_path / 'mm'
  coll = {'en': ['10\tpassage ten', '7\tpassage seven', '3\tpassage three', '99\tnever used'],
          'de': de_collection or ['3\tpassage drei', '7\tpassage sieben', '10\tpassage zehn']}
  queries = {'en': ['1\tquery one', '2\tquery two'], 'de': ['2\tfrage zwei', '1\tfrage eins']}
  cfg = dict(kind='mmarco', **extra,
             collections={l: write_lines(m / 'collections' / f'{l}.tsv', v)
                          for l, v in coll.items()},
             queries={l: write_lines(m / 'queries' / f'{l}.tsv', v) for l, v in queries.items()},
             triples=write_lines(m / 'triples.tsv.gz', triples or [
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


def test_parse_triples_chunk_keeps_three_integer_fields_and_names_the_other_lines():
  chunk = (b'1\t10\t3\n'     # 0 good
           b'2\t7\t10\r\n'   # 1 good: a trailing CR is allowed
           b'\n'             # 2 blank
           b'3\t\t4\n'       # 3 an empty field
           b'4\t5\n'         # 4 two fields
           b'5\t6\t7\t8\n'   # 5 four fields
           b'6\tx\t7\n'      # 6 not an integer
           b'\t8\t9\n'       # 7 an empty first field
           b'9\t8\t\n'       # 8 an empty last field
           b'-1\t2\t3\n'     # 9 a sign is not a digit
           b'11\t12\t13\n')  # 10 good
  ids, bad, n = mmarco.parse_triples_chunk(chunk)
  assert ids.tolist() == [[1, 10, 3], [2, 7, 10], [11, 12, 13]] and ids.dtype == np.int64
  assert bad.tolist() == [2, 3, 4, 5, 6, 7, 8, 9] and n == 11


def test_read_triples_across_chunk_boundaries_counts_lines_of_the_whole_file(tmp_path,
                                                                            monkeypatch):
  lines = [f'{q}\t{q + 100}\t{q + 200}' for q in range(40)]
  lines[17], lines[33] = '17\t117', 'bad'
  path = write_lines(tmp_path / 't.tsv.gz', lines, gz=True)
  whole, counts = mmarco.read_triples(path, workers=1, max_bad_lines=2)
  monkeypatch.setattr(mmarco, 'CHUNK_BYTES', 7)  # chunks end inside lines
  cut, cut_counts = mmarco.read_triples(path, workers=1, max_bad_lines=2)
  expect = [[q, q + 100, q + 200] for q in range(40) if q not in (17, 33)]
  assert whole.tolist() == cut.tolist() == expect
  assert counts == cut_counts == {'triples': 38, 'bad triples lines (skipped)': 2,
                                  'first bad lines': [18, 34]}
  with pytest.raises(ValueError, match=r"t\.tsv\.gz:18: expected qid<TAB>positive pid<TAB>"
                                       r"negative pid \(three integers\), got '17\\t117' \(2 bad "
                                       r"lines so far; max_bad_lines is 1\)"):
    mmarco.read_triples(path, workers=1, max_bad_lines=1)
  with pytest.raises(ValueError, match=r'empty\.tsv: no triples'):
    mmarco.read_triples(write_lines(tmp_path / 'empty.tsv', []), workers=1)


def test_settings_and_inputs_check_the_layout(tmp_path):
  cfg = _mmarco(tmp_path, max_bad_lines=4)
  assert mmarco.settings(cfg) == {'langs': ['de', 'en'], 'max_bad_lines': 4}
  m = tmp_path / 'mm'
  assert mmarco.inputs(cfg) == [str(m / 'collections' / 'de.tsv'),
                                str(m / 'collections' / 'en.tsv'), str(m / 'queries' / 'de.tsv'),
                                str(m / 'queries' / 'en.tsv'), str(m / 'triples.tsv.gz')]
  with pytest.raises(ValueError, match=r"source 'mm' \(mmarco\) needs collections .* triples "
                                       r"\(path\); got .*triples=None"):
    mmarco.settings(dict(cfg, name='mm', triples=None))
  with pytest.raises(ValueError, match=r"collections have languages \['de', 'en'\] but queries "
                                       r"have \['en'\]"):
    mmarco.inputs(dict(cfg, queries={'en': cfg['queries']['en']}))
