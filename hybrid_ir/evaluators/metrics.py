"""Per-query ranking metrics computed from the 1-based ranks of each query's relevant items.

Every function takes `ranks`: an [Nq, R] int array, row q holding the ranks of query q's relevant
items in one ranking (any order), 0 for padding. Ranks follow the package's tie rule (score desc,
candidate index asc; see `hybrid_ir.retrieval`), so they are distinct within a row. A query with no
relevant item gets NaN: callers exclude such queries and count them, never average them as 0.

Definitions (n = number of relevant items of the query, r_1 < ... < r_n their sorted ranks):
  AP    = (1/n) * sum_i i / r_i                      (average precision over the full ranking)
  AP@k  = sum_{i: r_i <= k} (i / r_i) / min(k, n)    (the normalisation used for mAP@20 by
                                                      XTREME-R; equals AP when all r_i <= k <= n)
  R@k   = #{i: r_i <= k} / n                         (recall)
  S@k   = 1 if r_1 <= k else 0                       (success / hit rate)
  rank distance = r_n - r_1                          (Huang et al. 2023; 0 when n == 1)
Recommended for: the LAReQA and MIRACL evaluators; `stats` compares two runs' per-query values.
"""
import numpy as np


def _sorted(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sorted ranks with padding moved to the end as +inf, and the count of real ones per row."""
  ranks = np.asarray(ranks)
  if ranks.ndim != 2:
    raise ValueError(f'ranks: expected [Nq, R], got shape {ranks.shape}')
  if (ranks < 0).any():
    raise ValueError(f'ranks: negative rank {ranks.min()} (0 is padding, real ranks are >= 1)')
  r = np.where(ranks > 0, ranks, np.inf).astype(np.float64)
  return np.sort(r, axis=1), (ranks > 0).sum(axis=1)


def average_precision(ranks: np.ndarray, k: int | None = None) -> np.ndarray:
  """[Nq] AP over the full ranking (k=None) or AP@k as defined in the module docstring."""
  r, n = _sorted(ranks)
  i = np.arange(1, r.shape[1] + 1, dtype=np.float64)[None, :]
  keep = np.isfinite(r) if k is None else r <= k
  prec = np.where(keep, i / np.where(keep, r, 1.0), 0.0).sum(axis=1)
  denom = n if k is None else np.minimum(k, n)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(n > 0, prec / denom, np.nan)


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
  """[Nq] fraction of the query's relevant items ranked in the top k."""
  r, n = _sorted(ranks)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(n > 0, (r <= k).sum(axis=1) / n, np.nan)


def success_at(ranks: np.ndarray, k: int) -> np.ndarray:
  """[Nq] 1.0 if any relevant item is in the top k, else 0.0."""
  r, n = _sorted(ranks)
  return np.where(n > 0, (r[:, 0] <= k).astype(np.float64), np.nan)


def rank_distance(ranks: np.ndarray) -> np.ndarray:
  """[Nq] rank of the lowest-ranked relevant item minus that of the highest-ranked one."""
  r, n = _sorted(ranks)
  last = np.take_along_axis(r, np.maximum(n - 1, 0)[:, None], axis=1)[:, 0]
  with np.errstate(invalid='ignore'):  # inf - inf for queries with no relevant item -> NaN below
    return np.where(n > 0, last - r[:, 0], np.nan)


def ndcg_at(gains_in_ranking: np.ndarray, ideal_gains: np.ndarray, k: int) -> np.ndarray:
  """[Nq] nDCG@k with linear gains and log2(rank + 1) discounts (trec_eval's ndcg_cut).

  Inputs: gains_in_ranking [Nq, >=k] relevance grade of the document at each rank of the run
  (0 for non-relevant / padding); ideal_gains [Nq, M] all judged grades of the query (any order,
  0 padding). Queries with no positive grade get NaN.
  """
  g = np.asarray(gains_in_ranking, np.float64)[:, :k]
  disc = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
  dcg = (g * disc[:g.shape[1]]).sum(axis=1)
  ideal = -np.sort(-np.asarray(ideal_gains, np.float64), axis=1)[:, :k]
  idcg = (ideal * disc[:ideal.shape[1]]).sum(axis=1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(idcg > 0, dcg / idcg, np.nan)
