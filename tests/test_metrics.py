"""hybrid_ir.evaluators.metrics: each per-query metric on ranks whose answer is worked out by
hand, the padding and no-relevant-item conventions, the refusals, and a cross-check of every
metric against ir_measures (trec_eval's definitions) on random rankings."""
import numpy as np
import pytest

from hybrid_ir.evaluators import metrics


def test_metric_definitions_by_hand():
  ranks = np.array([[3, 1, 25], [2, 0, 0], [0, 0, 0], [12, 1, 0]])
  # AP: [1,3,25] -> (1/1 + 2/3 + 3/25)/3 = 134/225; [2] -> 1/2; [1,12] -> (1 + 2/12)/2 = 7/12
  np.testing.assert_allclose(metrics.average_precision(ranks), [134 / 225, 1 / 2, np.nan, 7 / 12])
  # AP@20 = sum over ranks <= 20 of i/r_i, divided by min(20, n): (1 + 2/3)/3 = 5/9
  np.testing.assert_allclose(metrics.average_precision(ranks, k=20), [5 / 9, 1 / 2, np.nan, 7 / 12])
  # AP@1 of [1,3,25]: (1/1)/min(1,3) = 1; of [2]: 0
  np.testing.assert_allclose(metrics.average_precision(ranks, k=1), [1, 0, np.nan, 1])
  np.testing.assert_allclose(metrics.recall_at(ranks, 10), [2 / 3, 1, np.nan, 1 / 2])
  np.testing.assert_allclose(metrics.success_at(ranks, 1), [1, 0, np.nan, 1])
  np.testing.assert_allclose(metrics.rank_distance(ranks), [24, 0, np.nan, 11])


def test_order_and_padding_within_a_row_do_not_matter():
  a = np.array([[4, 2, 9, 0, 0]])
  b = np.array([[0, 9, 0, 4, 2]])
  for fn in (metrics.average_precision, lambda r: metrics.average_precision(r, k=5),
             lambda r: metrics.recall_at(r, 4), lambda r: metrics.success_at(r, 2),
             metrics.rank_distance):
    np.testing.assert_array_equal(fn(a), fn(b))
  # [2, 4, 9]: AP = (1/2 + 2/4 + 3/9)/3 = 4/9; AP@5 = (1/2 + 2/4)/3 = 1/3; R@4 = 2/3; S@1 = 0
  np.testing.assert_allclose(metrics.average_precision(a), [4 / 9])
  np.testing.assert_allclose(metrics.average_precision(a, k=5), [1 / 3])
  np.testing.assert_allclose(metrics.average_precision(a, k=2), [1 / 2 / 2])  # min(k, n) = 2
  np.testing.assert_allclose(metrics.recall_at(a, 4), [2 / 3])
  np.testing.assert_array_equal(metrics.success_at(a, 1), [0.0])
  np.testing.assert_array_equal(metrics.success_at(a, 2), [1.0])
  np.testing.assert_array_equal(metrics.rank_distance(a), [7.0])


def test_ranks_of_the_wrong_shape_or_sign_are_refused():
  with pytest.raises(ValueError, match=r'ranks: expected \[Nq, R\], got shape \(3,\)'):
    metrics.average_precision(np.array([1, 2, 3]))
  with pytest.raises(ValueError, match=r'ranks: negative rank -2 \(0 is padding'):
    metrics.recall_at(np.array([[1, -2]]), 10)


def test_ndcg_by_hand():
  # Query 0: the run's grades by rank 2, 0, 1; judged grades 2, 1, 1 (one judged document the run
  # never retrieved). DCG@3 = 2/log2(2) + 0 + 1/log2(4) = 2.5; IDCG@3 = 2 + 1/log2(3) + 1/2.
  # Query 1: the ideal order, so 1. Query 2: no positive grade -> NaN.
  gains = np.array([[2, 0, 1, 1], [3, 1, 0, 0], [0, 0, 0, 0]])
  ideal = np.array([[1, 2, 1], [1, 3, 0], [0, 0, 0]])
  idcg3 = 2 + 1 / np.log2(3) + 1 / 2
  np.testing.assert_allclose(metrics.ndcg_at(gains, ideal, 3), [2.5 / idcg3, 1.0, np.nan])
  # @2: DCG = 2, IDCG = 2 + 1/log2(3); @1: the top document has the top grade.
  np.testing.assert_allclose(metrics.ndcg_at(gains, ideal, 2),
                             [2 / (2 + 1 / np.log2(3)), 1, np.nan])
  np.testing.assert_allclose(metrics.ndcg_at(gains, ideal, 1), [1.0, 1.0, np.nan])
  # A ranking shorter than k, and fewer judged documents than k.
  np.testing.assert_allclose(metrics.ndcg_at(np.array([[0, 1]]), np.array([[1]]), 10),
                             [1 / np.log2(3)])


def test_every_metric_matches_ir_measures_on_random_rankings():
  ir_measures = pytest.importorskip('ir_measures')
  from ir_measures import AP, R, Success, nDCG
  rng = np.random.default_rng(0)
  n_docs, n_q = 40, 25
  run, qrels, ranks, gains, ideal = {}, {}, [], [], []
  for q in range(n_q):
    order = rng.permutation(n_docs)  # order[r] = the document at rank r + 1
    grades = rng.choice([0, 0, 0, 1, 2], size=n_docs)
    grades[order[rng.integers(n_docs)]] = 1  # at least one relevant document
    run[f'q{q}'] = {f'd{d}': float(n_docs - r) for r, d in enumerate(order)}
    qrels[f'q{q}'] = {f'd{d}': int(g) for d, g in enumerate(grades)}
    rel_ranks = [r + 1 for r, d in enumerate(order) if grades[d] > 0]
    ranks.append(rel_ranks + [0] * (n_docs - len(rel_ranks)))
    gains.append(grades[order])
    ideal.append(grades)
  ranks, gains, ideal = np.array(ranks), np.array(gains), np.array(ideal)
  ours = {AP: metrics.average_precision(ranks), R @ 10: metrics.recall_at(ranks, 10),
          Success @ 5: metrics.success_at(ranks, 5), nDCG @ 10: metrics.ndcg_at(gains, ideal, 10)}
  ref = {(m.query_id, m.measure): m.value for m in ir_measures.iter_calc(list(ours), qrels, run)}
  for measure, values in ours.items():
    expect = [ref[(f'q{q}', measure)] for q in range(n_q)]
    np.testing.assert_allclose(values, expect, rtol=1e-12, err_msg=str(measure))
    assert 0 < np.mean(values) < 1, measure  # non-degenerate
