"""LAReQA metrics on a hand-built fixture whose every rank is known, ties included.

Fixture (languages en, de, es; question q2 has no es version, as happens in MLQA-R):
  candidates (global index): E0=0 E1=1 E2=2 | D0=3 D1=4 | S0=5 S1=6
  questions: Q0=en q1, Q1=en q2, Q2=de q1, Q3=de q2, Q4=es q1
  relevant:  q1 -> {E0, D0, S0}, q2 -> {E1, D1}
The fake encoder maps question i to the one-hot e_i and candidate j to column j of SCORES, so the
score of (Qi, cj) is exactly SCORES[i, j] (multiples of 1/8, exact in float32). Tie rule: equal
scores are ordered by candidate index. All expected values below are derived by hand.
"""
import json
from fractions import Fraction as F

import numpy as np
import pytest

from hybrid_ir.evaluators import lareqa as ev
from hybrid_ir.evaluators import stats

#                   E0     E1     E2     D0     D1     S0     S1
SCORES = np.array([[.5,    .75,   .5,    .5,    .25,   .875,  0],      # Q0 en q1
                   [.5,    .5,    .5,    .625,  .5,    .5,    .5],     # Q1 en q2
                   [0,     .25,   .125,  .75,   .75,   .25,   .375],   # Q2 de q1
                   [-.5,   .25,   .25,   .25,   .125,  .5,    .25],    # Q3 de q2
                   [.875] * 7], np.float32)                            # Q4 es q1 (all tied)
# Multilingual ranks (order: score desc, index asc):
#   Q0: S0 1, E1 2, E0 3, E2 4, D0 5, D1 6, S1 7      -> relevant E0 3, D0 5, S0 1
#   Q1: D0 1, E0 2, E1 3, E2 4, D1 5, S0 6, S1 7      -> relevant E1 3, D1 5
#   Q2: D0 1, D1 2, S1 3, E1 4, S0 5, E2 6, E0 7      -> relevant D0 1, S0 5, E0 7
#   Q3: S0 1, E1 2, E2 3, D0 4, S1 5, D1 6, E0 7      -> relevant E1 2, D1 6
#   Q4: index order                                    -> relevant E0 1, D0 4, S0 6
MUL_AP = [F(1, 3) * (1 + F(2, 3) + F(3, 5)),   # 34/45
          F(1, 2) * (F(1, 3) + F(2, 5)),       # 11/30
          F(1, 3) * (1 + F(2, 5) + F(3, 7)),   # 64/105
          F(1, 2) * (F(1, 2) + F(2, 6)),       # 5/12
          F(1, 3) * (1 + F(2, 4) + F(3, 6))]   # 2/3
RANK_DIST = [5 - 1, 5 - 3, 7 - 1, 6 - 2, 6 - 1]
# Per-language settings: rank of the Y answer among Y's candidates; AP = 1/rank (one relevant).
#   Q0: en E0 .5 after E1 .75 -> 2; de D0 1; es S0 1
#   Q1: en E1 ties E0 (lower index) -> 2; de D1 .5 after D0 .625 -> 2; es excluded
#   Q2: en E0 0 last -> 3; de D0 ties D1, wins by index -> 1; es S0 .25 after S1 .375 -> 2
#   Q3: en E1 ties E2, wins -> 1; de D1 .125 after D0 .25 -> 2; es excluded
#   Q4: all ties -> 1, 1, 1
PAIR_RANK = [[2, 1, 1], [2, 2, 0], [3, 1, 2], [1, 2, 0], [1, 1, 1]]  # columns en, de, es
MATRIX_MAP = [[F(1, 2), F(3, 4), F(1)],         # en->en (1/2+1/2)/2, en->de (1+1/2)/2, en->es 1
              [F(2, 3), F(3, 4), F(1, 2)],      # de->en (1/3+1)/2, de->de (1+1/2)/2, de->es 1/2
              [F(1), F(1), F(1)]]
MO_MAP = (F(1, 2) + F(3, 4) + F(1)) / 3                                            # 3/4
CR_MAP = (F(3, 4) + F(1) + F(2, 3) + F(1, 2) + F(1) + F(1)) / 6                    # 59/72
MO_R1 = (F(0) + F(1, 2) + F(1)) / 3        # en->en 0/2, de->de 1/2, es->es 1
CR_R1 = (F(1, 2) + F(1) + F(1, 2) + F(0) + F(1) + F(1)) / 6  # en->de, en->es, de->en, de->es, es->*
MUL_MAP = ((MUL_AP[0] + MUL_AP[1]) / 2 + (MUL_AP[2] + MUL_AP[3]) / 2 + MUL_AP[4]) / 3
RANK_DISTANCE = (F(4 + 2, 2) + F(6 + 4, 2) + F(5)) / 3                             # 13/3

SENTENCES = {'en': ['E0.', 'E1.', 'E2.'], 'de': ['D0.', 'D1.'], 'es': ['S0.', 'S1.']}
QUESTIONS = {'en': [('q1', 'en q1?', 0), ('q2', 'en q2?', 1)],
             'de': [('q1', 'de q1?', 0), ('q2', 'de q2?', 1)], 'es': [('q1', 'es q1?', 0)]}


@pytest.fixture
def fixture_dir(tmp_path):
  for lang, sents in SENTENCES.items():
    context = ' '.join(sents)
    breaks = [[4 * i, 4 * i + 3] for i in range(len(sents))]
    qas = [{'id': qid, 'question': q, 'answers': [{'answer_start': 4 * s, 'text': 'x'}]}
           for qid, q, s in QUESTIONS[lang]]
    doc = {'data': [{'title': 'T', 'paragraphs': [
        {'context': context, 'sentences': sents, 'sentence_breaks': breaks, 'qas': qas}]}]}
    (tmp_path / 'xquad-r').mkdir(exist_ok=True)
    (tmp_path / 'xquad-r' / f'{lang}.json').write_text(json.dumps(doc))
  return tmp_path


class FakeEncoder:
  """Question i -> e_i, candidate j -> SCORES[:, j]; counts calls (for the cache test)."""

  def __init__(self):
    self.calls = []
    q_texts = [q for lang in ('en', 'de', 'es') for _, q, _ in QUESTIONS[lang]]
    c_texts = [s for lang in ('en', 'de', 'es') for s in SENTENCES[lang]]
    self.table = {'query': {t: np.eye(5, dtype=np.float32)[i] for i, t in enumerate(q_texts)},
                  'passage': {t: SCORES[:, j] for j, t in enumerate(c_texts)}}

  def __call__(self, params, texts, kind):
    self.calls.append((kind, len(texts)))
    return np.stack([self.table[kind][t] for t in texts])


def _run(fixture_dir, **kw):
  enc = FakeEncoder()
  e = ev.LareqaEvaluator(enc, 'xquad-r', data_dir=str(fixture_dir), langs=['en', 'de', 'es'], **kw)
  return e, enc, dict(e.run(params=None))


def test_hand_computed_metrics(fixture_dir):
  e, _, out = _run(fixture_dir)
  r = e.last_result
  np.testing.assert_array_equal(r.pair_ranks, PAIR_RANK)
  np.testing.assert_allclose(r.mul_ap, [float(x) for x in MUL_AP], rtol=1e-12)
  np.testing.assert_allclose(r.mul_ap20, [float(x) for x in MUL_AP], rtol=1e-12)  # all ranks <= 7
  np.testing.assert_array_equal(r.rank_distance, RANK_DIST)
  np.testing.assert_allclose(r.matrix('map'), np.array(MATRIX_MAP, float), rtol=1e-12)
  expect = {'mo_map': MO_MAP, 'cr_map': CR_MAP, 'mo_map@20': MO_MAP, 'cr_map@20': CR_MAP,
            'mo_r1': MO_R1, 'cr_r1': CR_R1, 'mul_map': MUL_MAP, 'mul_map@20': MUL_MAP,
            'mul_r10': 1, 'mul_success10': 1, 'rank_distance': RANK_DISTANCE}
  for k, v in expect.items():
    assert out[f'xquad-r/{k}'] == pytest.approx(float(v), rel=1e-12), k
  assert out['xquad-r/num_questions'] == 5 and out['xquad-r/num_candidates'] == 7
  assert out['xquad-r/num_relevant_pairs'] == 3 + 2 + 3 + 2 + 3
  assert out['xquad-r/num_excluded'] == 2  # Q1 en->es, Q3 de->es
  assert r.excluded.tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 0]]
  assert out['xquad-r/de/mo_map'] == pytest.approx(0.75)
  assert out['xquad-r/de/cr_map'] == pytest.approx(float((F(2, 3) + F(1, 2)) / 2))
  assert out['xquad-r/en/rank_distance'] == pytest.approx(3.0)
  assert out['xquad-r/map/de-en'] == pytest.approx(2 / 3)
  # Paired-test vectors, one value per question (the resampling unit). Cr of question q in X:
  # sum over Y of AP(q, X->Y) * n_X / (n_XY * P_X); e.g. Q0 (en; de and es both answered by 2
  # and 1 en questions, P_en = 2): 1 * 2/(2*2) + 1 * 2/(1*2) = 3/2.
  np.testing.assert_allclose(r.per_query('mo_map'), [1 / 2, 1 / 2, 1, 1 / 2, 1])
  cr = r.per_query('cr_map')
  np.testing.assert_allclose(cr, [3 / 2, 1 / 4, 2 / 3, 1 / 2, 1])
  # ... so that their macro average over query languages is the reported figure, exactly.
  lang = np.array(r.langs)[r.question_lang]
  assert stats.macro_mean(cr, lang) == pytest.approx(float(CR_MAP), rel=1e-12)
  assert stats.macro_mean(r.per_query('mo_map'), lang) == pytest.approx(float(MO_MAP), rel=1e-12)
  # The report computes the same vectors from the JSON eval.py writes.
  from_json = ev.per_query_vectors(json.loads(json.dumps(r.to_json())))
  for k in ('mo_map', 'cr_map', 'mul_map', 'rank_distance'):
    np.testing.assert_allclose(from_json[k], r.per_query(k), rtol=1e-12, err_msg=k)


def test_json_and_tables(fixture_dir):
  e, _, _ = _run(fixture_dir)
  blob = json.loads(json.dumps(e.last_result.to_json()))
  assert blob['counts'] == {'num_questions': 5, 'num_candidates': 7, 'num_relevant_pairs': 13,
                            'num_excluded': 2, 'excluded': [[0, 0, 1], [0, 0, 1], [0, 0, 0]]}
  assert blob['per_query']['pair_ap'][1] == [0.5, 0.5, None]
  assert blob['per_query']['mul_ranks'][2] == [7, 1, 5]
  assert blob['per_query']['mul_top10'][4] == [0, 1, 2, 3, 4, 5, 6, -1, -1, -1]
  table = ev.format_table({'fake': e.last_result})
  assert table.splitlines()[0].startswith('| model | XQuAD-R Mo | Cr | Mul |')
  assert f'| fake | 0.750 | {float(CR_MAP):.3f} | {float(MUL_MAP):.3f} |' in table
  assert '| de |' in ev.format_language_table(e.last_result)


def test_embedding_cache(fixture_dir, tmp_path):
  cache = tmp_path / 'cache'
  _, enc, first = _run(fixture_dir, cache_dir=str(cache), cache_key='fake')
  assert enc.calls == [('query', 5), ('passage', 7)]
  _, enc2, second = _run(fixture_dir, cache_dir=str(cache), cache_key='fake')
  assert enc2.calls == [] and first == pytest.approx(second, nan_ok=True)
  _, enc3, _ = _run(fixture_dir, cache_dir=str(cache), cache_key='other-model')
  assert len(enc3.calls) == 2
  # Same settings, other params (the next checkpoint a polling evaluator scores): a new entry.
  e4 = ev.LareqaEvaluator(FakeEncoder(), 'xquad-r', data_dir=str(fixture_dir),
                          langs=['en', 'de', 'es'], cache_dir=str(cache), cache_key='fake')
  dict(e4.run(params={'w': np.ones(3, np.float32)}))
  assert len(e4.predict_fn.calls) == 2
  dict(e4.run(params={'w': np.ones(3, np.float32)}))
  assert len(e4.predict_fn.calls) == 2  # the same params again: read from the cache
  with pytest.raises(ValueError, match='cache_key'):
    ev.LareqaEvaluator(FakeEncoder(), 'xquad-r', data_dir=str(fixture_dir), cache_dir=str(cache))


def test_batch_size_splits_predict_calls(fixture_dir):
  _, enc, out = _run(fixture_dir, batch_size=2)
  assert enc.calls == [('query', 2), ('query', 2), ('query', 1), ('passage', 2), ('passage', 2),
                       ('passage', 2), ('passage', 1)]
  assert out['xquad-r/mo_map'] == pytest.approx(0.75)


def test_evaluator_as_eval_py_builds_it(fixture_dir):
  # eval.py: module.Evaluator(predict_fn, name=<eval name>, **config.evals[name]).
  e = ev.Evaluator(FakeEncoder(), name='xq', dataset='xquad-r', data_dir=str(fixture_dir),
                   langs=('en', 'de', 'es'), candidate_text='sentence', batch_size=None)
  out = dict(e.run(None))
  assert out['xq/mo_map'] == pytest.approx(0.75) and 'xquad-r/mo_map' not in out
  table = e.result.table()
  assert '| xquad-r | 0.750 |' in table and '| es | 1.000 | 1.000 |' in table


@pytest.mark.slow
@pytest.mark.parametrize('name,langs', [('mlqa-r', None), ('xquad-r', ('ar', 'en', 'th', 'zh'))])
def test_real_layout_matches_independent_reference(shared_data, name, langs):
  """Full MLQA-R (unequal languages, exclusions) and part of XQuAD-R, random embeddings, against a
  reference written independently: numpy stable argsort per row, sklearn AP, explicit averaging."""
  from sklearn.metrics import average_precision_score
  from hybrid_ir.data import lareqa as lareqa_data
  d = lareqa_data.load_lareqa(shared_data, name, langs=langs)
  rng = np.random.default_rng(0)
  # Queries near their own answer, so ranks span the whole range; continuous values, no ties.
  c = rng.standard_normal((d.num_candidates, 24)).astype(np.float32)
  q = c[d.answer] + 1.0 * rng.standard_normal((d.num_questions, 24)).astype(np.float32)
  c /= np.linalg.norm(c, axis=1, keepdims=True)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  got = ev.evaluate_embeddings(d, q, c).metrics()

  s = q.astype(np.float64) @ c.T.astype(np.float64)
  nl = len(d.langs)
  by_lang = [np.flatnonzero(d.cand_lang == y) for y in range(nl)]
  pair = {}  # (x, y) -> list of (AP, R@1)
  mul_ap, rdist, qlang = [], [], []
  for i in range(d.num_questions):
    x = d.question_lang[i]
    rel = set(int(r) for r in d.relevant_by_lang[i] if r >= 0)
    y_true = np.zeros(d.num_candidates, bool)
    y_true[list(rel)] = True
    mul_ap.append(average_precision_score(y_true, s[i]))
    pos = np.empty(d.num_candidates, int)
    pos[np.argsort(-s[i], kind='stable')] = np.arange(1, d.num_candidates + 1)
    rdist.append(max(pos[list(rel)]) - min(pos[list(rel)]))
    qlang.append(x)
    for y in range(nl):
      r = d.relevant_by_lang[i, y]
      if r < 0:
        continue
      cand = by_lang[y]
      rank = 1 + int((s[i, cand] > s[i, r]).sum())
      pair.setdefault((x, y), []).append((1 / rank, float(rank == 1)))
  mean = lambda v: float(np.mean(v))  # noqa: E731
  setting = {k: np.mean(v, axis=0) for k, v in pair.items()}
  mo = [setting[(x, x)] for x in range(nl)]
  cr = [v for (x, y), v in setting.items() if x != y]
  qlang = np.array(qlang)
  per_lang = lambda v: mean([np.mean(np.array(v)[qlang == x]) for x in range(nl)])  # noqa: E731
  assert got['mo_map'] == pytest.approx(mean([m[0] for m in mo]), abs=1e-9)
  assert got['cr_map'] == pytest.approx(mean([m[0] for m in cr]), abs=1e-9)
  assert got['mo_r1'] == pytest.approx(mean([m[1] for m in mo]), abs=1e-9)
  assert got['cr_r1'] == pytest.approx(mean([m[1] for m in cr]), abs=1e-9)
  assert got['mul_map'] == pytest.approx(per_lang(mul_ap), abs=1e-6)
  # The reference scores in float64, we in float32: a handful of near-equal scores swap order,
  # which moves the mean rank distance by ~1e-4 (of ~1e4); the tolerance is 1%.
  assert got['rank_distance'] == pytest.approx(per_lang(rdist), rel=1e-6)
  assert got['num_excluded'] == sum(int((d.relevant_by_lang[:, y] < 0).sum()) for y in range(nl))
  assert 0.02 < got['mul_map'] < 0.98 and got['rank_distance'] > 100  # non-degenerate


@pytest.mark.parametrize('value, key, text', [
    (0.41949, 'mo_map', '0.419'), (6514.46, 'rank_distance', '6514.5'), (float('nan'), 'mo_map', '—'),
    (None, 'rank_distance', '—')])
def test_format_metric_rounds_as_the_tables_print(value, key, text):
  assert ev.format_metric(value, key) == text
