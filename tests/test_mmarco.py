"""hybrid_ir.data.mmarco: mMARCO's collections, queries and id triples -> an aligned store
(groups, deduplicated negatives, identities); a passage missing in one language and bad lines
named by file and line, or skipped within the budget; the synthetic fixture's rows aligned."""
import pytest

from hybrid_ir import data

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
