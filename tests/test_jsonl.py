"""hybrid_ir.data.jsonl: one JSON record per line -> a store (negatives pooled per group,
identities keyed by positive_id or normalised text); each malformed record named by file and
line; the skip budget counted."""
import json

import pytest

from hybrid_ir.data import jsonl

from store_helpers import jsonl_file, jsonl_record, prep  # tests/store_helpers.py


def test_jsonl_store_pools_negatives_and_keys_identity(tmp_path):
  path = jsonl_file(tmp_path, [
      jsonl_record('g1', 'en', negatives=['n1']), '',
      jsonl_record('g1', 'en', negatives=['n2', 'n1']), jsonl_record('g1', 'de'),
      jsonl_record('g2', 'en', positive_id='P'), jsonl_record('g3', 'de', positive_id='P'),
      dict(jsonl_record('g4', 'en'), positive='P G1 EN')])  # the same text as g1's positive
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
    prep(tmp_path, kind='jsonl', paths=[jsonl_file(tmp_path, [good, line])])


def test_jsonl_skip_budget_counts_what_it_skips(tmp_path):
  path = jsonl_file(tmp_path, [jsonl_record('a', 'en'), '{"broken', jsonl_record('b', 'en')])
  store = prep(tmp_path, kind='jsonl', paths=[path], max_bad_lines=1)
  assert store.num_groups == 2 and store.meta['counts']['bad lines (skipped)'] == 1
  assert store.meta['counts']['first bad lines'][0].endswith('r.jsonl:2')


def test_parse_record_defaults_negatives_and_names_each_bad_field():
  rec = jsonl.parse_record({'group_id': 'g', 'lang': 'en', 'query': 'q', 'positive': 'p'}, 'w')
  assert rec == {'group_id': 'g', 'lang': 'en', 'query': 'q', 'positive': 'p', 'negatives': []}
  good = dict(group_id='g', lang='en', query='q', positive='p')
  for bad, match in [
      (['a'], r"^f:3: record must be an object, got list$"),
      (dict(good, lang=' '), r"^f:3: field 'lang' must be a non-empty string, got ' '$"),
      (dict(good, group_id=7), r"^f:3: field 'group_id' must be a non-empty string, got 7$"),
      (dict(good, negatives='n'), r"^f:3: field negatives must be a list of strings, got 'n'$"),
      (dict(good, negatives=['n', 3]), r"^f:3: negatives\[1\] must be a non-empty string, got 3$"),
      (dict(good, positive_id=''), r"^f:3: field positive_id must be a non-empty string"),
      (dict(good, extra=1, more=2), r"^f:3: unknown record fields \['extra', 'more'\]; known: ")]:
    with pytest.raises(ValueError, match=match):
      jsonl.parse_record(bad, 'f:3')
