"""hybrid_ir.data.text_files: gzip by name, non-blank lines with their numbers, file:line errors."""
import gzip
import json

import pytest

from hybrid_ir.data import text_files


def _write(path, text: str) -> None:
  if str(path).endswith('.gz'):
    with gzip.open(path, 'wt', encoding='utf-8') as f:
      f.write(text)
  else:
    path.write_text(text, encoding='utf-8')


@pytest.mark.parametrize('name', ['a.txt', 'a.txt.gz'])
def test_lines_skip_blanks_keep_numbers_and_strip_line_endings(tmp_path, name):
  _write(tmp_path / name, 'first\r\n\n   \nsecond\tx\nthird')
  got = [(n, line) for _, n, line in text_files.lines(tmp_path / name)]
  assert got == [(1, 'first'), (4, 'second\tx'), (5, 'third')]
  with text_files.open_bytes(tmp_path / name) as f:
    assert f.read().startswith(b'first\r\n')


def test_a_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.tsv: file not found'):
    list(text_files.lines(tmp_path / 'nope.tsv'))


def test_decode_line_names_the_byte_and_its_context():
  assert text_files.decode_line('é'.encode(), 'f:1') == 'é'
  with pytest.raises(ValueError, match=r"^f:3: invalid UTF-8 at byte 4 of the line \(b'abc\\xff"):
    text_files.decode_line(b'abc\xffdef', 'f:3')


def test_json_line_and_load_json_name_line_and_column(tmp_path):
  assert text_files.json_line('{"a": [1, 2]}', 'f:1') == {'a': [1, 2]}
  with pytest.raises(ValueError, match=r'^f:7: invalid JSON: .* at column 7$'):
    text_files.json_line('{"a": ', 'f:7')
  (tmp_path / 'doc.json').write_text('{\n "a": 1,\n "b": \n}\n')
  with pytest.raises(ValueError, match=r'doc\.json:4: invalid JSON: Expecting value'):
    text_files.load_json(tmp_path / 'doc.json')
  _write(tmp_path / 'doc.json.gz', json.dumps({'x': 'é'}))
  assert text_files.load_json(tmp_path / 'doc.json.gz') == {'x': 'é'}


def test_qrels_from_gzip_keep_every_judgement_and_its_line(tmp_path):
  _write(tmp_path / 'q.txt.gz', 'q1 Q0 d1 2\n\nq1 0 d2 0\nq2 Q0 d1 1\n')
  got = list(text_files.iter_qrels(tmp_path / 'q.txt.gz'))
  assert [g[1:] for g in got] == [('q1', 'd1', 2), ('q1', 'd2', 0), ('q2', 'd1', 1)]
  assert [g[0].rsplit(':', 1)[1] for g in got] == ['1', '3', '4']
  assert text_files.load_qrels(tmp_path / 'q.txt.gz') == {'q1': {'d1': 2, 'd2': 0},
                                                           'q2': {'d1': 1}}


@pytest.mark.parametrize('content,message', [
    ('q1 Q0 d1\n', r"q\.txt:1: expected 'qid Q0 docid relevance', got 3 fields"),
    ('q1 Q0 d1 yes\n', r"q\.txt:1: relevance 'yes' is not an integer"),
    ('q1 Q0 d1 1\nq1 Q0 d1 0\n', r"q\.txt:2: duplicate judgement for qid 'q1' docid 'd1'"),
])
def test_bad_qrels_lines_are_named(tmp_path, content, message):
  (tmp_path / 'q.txt').write_text(content)
  with pytest.raises(ValueError, match=message):
    text_files.load_qrels(tmp_path / 'q.txt')


def test_read_texts_jsonl_gz_and_tsv(tmp_path):
  _write(tmp_path / 'c.jsonl.gz', '\n'.join([
      json.dumps({'id': 'd1', 'text': ' body ', 'title': 'Head', 'lang': 'de'}),
      '',
      json.dumps({'id': 7, 'text': 'seven', 'extra': 1})]) + '\n')
  c = text_files.read_texts(tmp_path / 'c.jsonl.gz')
  assert (c.ids, c.texts, c.langs, c.lines) == (['d1', '7'], ['Head body', 'seven'],
                                                ['de', None], [1, 3])
  assert len(c) == 2 and c.has_langs
  (tmp_path / 'q.tsv').write_text('qa\talpha\nqb\tbeta\t en \n')
  q = text_files.read_texts(tmp_path / 'q.tsv', 'queries')
  assert (q.ids, q.texts, q.langs) == (['qa', 'qb'], ['alpha', 'beta'], [None, 'en'])
  with pytest.raises(ValueError, match=r'e\.tsv: no queries records'):
    (tmp_path / 'e.tsv').write_text('\n')
    text_files.read_texts(tmp_path / 'e.tsv', 'queries')
  with pytest.raises(FileNotFoundError, match='queries file not found'):
    text_files.read_texts(tmp_path / 'none.tsv', 'queries')


def test_a_gzipped_jsonl_source_reads_as_the_plain_one(tmp_path):
  from hybrid_ir import data  # pylint: disable=g-import-not-at-top
  lines = ''.join(json.dumps({'group_id': f'g{g}', 'lang': l, 'query': f'q{g}{l}',
                              'positive': f'p{g}{l}'}) + '\n' for g in range(3) for l in ('en', 'de'))
  _write(tmp_path / 'r.jsonl', lines)
  _write(tmp_path / 'r.jsonl.gz', lines)
  stores = [data.open_store(dict(name=f's{i}', kind='jsonl', paths=[str(tmp_path / name)]),
                            tmp_path / 'stores', workers=1)
            for i, name in enumerate(('r.jsonl', 'r.jsonl.gz'))]
  for lang in ('en', 'de'):
    assert stores[0].texts(lang, range(6)) == stores[1].texts(lang, range(6))
  assert stores[0].num_groups == stores[1].num_groups == 3


def test_raw_lines_run_through_the_files_in_turn_blank_lines_included(tmp_path):
  _write(tmp_path / 'a.tsv.gz', 'x\n\nb\xe9\n')
  (tmp_path / 'b.tsv').write_bytes(b'\xff\n')
  got = list(text_files.raw_lines([tmp_path / 'a.tsv.gz', str(tmp_path / 'b.tsv')]))
  assert got == [(f'{tmp_path}/a.tsv.gz:1', 1, b'x\n'), (f'{tmp_path}/a.tsv.gz:2', 2, b'\n'),
                 (f'{tmp_path}/a.tsv.gz:3', 3, 'bé\n'.encode()), (f'{tmp_path}/b.tsv:1', 1, b'\xff\n')]
