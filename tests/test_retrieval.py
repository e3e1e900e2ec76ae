"""Exact retrieval against brute-force numpy ranks (stable argsort of -scores), ties included."""
import numpy as np
import pytest

from hybrid_ir import retrieval


def _brute_rank(s_row, subset, c):
  """1-based rank of candidate c among `subset`, ordered by score desc then index asc."""
  order = subset[np.argsort(-s_row[subset], kind='stable')]
  return int(np.flatnonzero(order == c)[0]) + 1


def _data(seed, nq=45, nc=203, d=6, ties=True):
  rng = np.random.default_rng(seed)
  if ties:  # small integer vectors: many exactly equal scores
    q = rng.integers(-1, 2, (nq, d)).astype(np.float32)
    c = rng.integers(-1, 2, (nc, d)).astype(np.float32)
    c[nc // 2:nc // 2 + 10] = c[min(5, nc - 1)]  # duplicated candidates, as duplicate sentences give
  else:
    q = rng.standard_normal((nq, d)).astype(np.float32)
    c = rng.standard_normal((nc, d)).astype(np.float32)
  rel = rng.integers(-1, nc, (nq, 5))
  rel[:, 0] = rng.integers(0, nc, nq)  # every query has a relevant item
  rel[:3, 1] = min(5, nc - 1)  # relevant items with exact duplicates among the candidates
  groups = rng.integers(0, 4, nc)
  return q, c, rel, groups


@pytest.mark.parametrize('seed,ties,block', [(0, True, 16), (1, True, 7), (2, False, 32)])
def test_rank_relevant_matches_bruteforce(seed, ties, block):
  q, c, rel, groups = _data(seed, ties=ties)
  out = retrieval.rank_relevant(q, c, rel, cand_groups=groups, k=9, query_block=block)
  s = q @ c.T  # integer-valued in the tie case, so exactly what the device computes
  assert ties is False or (s[:, :, None] == s[:, None, :]).sum() > 10 * s.size
  all_idx = np.arange(c.shape[0])
  for i in range(q.shape[0]):
    for r, cand in enumerate(rel[i]):
      if cand < 0:
        assert out.ranks[i, r] == 0 and out.group_ranks[i, r] == 0
        continue
      assert out.ranks[i, r] == _brute_rank(s[i], all_idx, cand)
      same = np.flatnonzero(groups == groups[cand])
      assert out.group_ranks[i, r] == _brute_rank(s[i], same, cand)
    if ties:
      np.testing.assert_array_equal(out.topk_indices[i], np.argsort(-s[i], kind='stable')[:9])
      np.testing.assert_array_equal(out.topk_scores[i], -np.sort(-s[i])[:9])


def test_candidate_mask_is_a_subset():
  q, c, rel, _ = _data(3)
  keep = np.ones(c.shape[0], bool)
  keep[::3] = False
  keep[rel[rel >= 0]] = True
  out = retrieval.rank_relevant(q, c, rel, cand_mask=keep, k=5, query_block=8)
  s = q @ c.T
  sub = np.flatnonzero(keep)
  for i in range(q.shape[0]):
    assert out.ranks[i, 0] == _brute_rank(s[i], sub, rel[i, 0])
    assert np.isin(out.topk_indices[i], sub).all()
  with pytest.raises(ValueError, match='excluded by cand_mask'):
    retrieval.rank_relevant(q, c, rel, cand_mask=np.zeros(c.shape[0], bool))


def test_k_larger_than_pool_pads():
  q, c, rel, _ = _data(4, nq=3, nc=4)
  rel = np.clip(rel, -1, 3)
  out = retrieval.rank_relevant(q, c, rel, k=6)
  assert (out.topk_indices[:, 4:] == -1).all() and np.isneginf(out.topk_scores[:, 4:]).all()
  assert sorted(out.topk_indices[0, :4].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize('shards,cand_block', [((203,), 64), ((50, 1, 152), 17)])
def test_streaming_top_k_matches_bruteforce(shards, cand_block):
  q, c, _, _ = _data(5)
  parts = np.split(c, np.cumsum(shards)[:-1])
  scores, idx = retrieval.top_k(q, parts, 12, query_block=16, cand_block=cand_block)
  s = q @ c.T
  np.testing.assert_array_equal(idx, np.argsort(-s, axis=1, kind='stable')[:, :12])
  np.testing.assert_array_equal(scores, -np.sort(-s, axis=1)[:, :12])


def test_rank_and_stream_agree_on_float_scores():
  # Non-integer scores: both paths take every score from one matmul, so the lists agree exactly.
  q, c, rel, _ = _data(6, ties=False, nc=300, d=32)
  a = retrieval.rank_relevant(q, c, rel, k=10)
  _, idx = retrieval.top_k(q, c, 10, cand_block=300)
  np.testing.assert_array_equal(a.topk_indices, idx)
  # The relevant item at rank 1 is the top-1 of the list.
  first = a.ranks == 1
  assert (rel[first] == np.repeat(a.topk_indices[:, :1], rel.shape[1], 1)[first]).all()


def test_memory_budget_sets_query_block():
  assert retrieval.default_query_block(13014) == 256
  assert retrieval.default_query_block(1_000_000, 256 << 20) == 64  # 64 x 1M x 4 B = 256 MiB
  assert retrieval.default_query_block(50_000_000) == 8


def test_bad_input():
  q, c, rel, _ = _data(7)
  with pytest.raises(ValueError, match='NaN'):
    bad = c.copy()
    bad[3, 0] = np.nan
    retrieval.rank_relevant(q, bad, rel)
  with pytest.raises(ValueError, match='dimension mismatch'):
    retrieval.rank_relevant(q[:, :3], c, rel)
  with pytest.raises(ValueError, match='indices must be in'):
    retrieval.rank_relevant(q, c, rel + 1000)
