"""Exact dense retrieval on device: ranks of relevant items and top-k lists, in fixed-shape blocks.

Scores are dot products of L2-normalised embeddings (= cosine). Everything is exact (no ANN) and
computed inside `jax.jit` on fixed block shapes (queries padded to a multiple of the block, so each
pool size compiles once).

Tie rule, used everywhere in this package (metrics, tests, top-k lists):
  rank(c) = 1 + #{c' : s_c' > s_c} + #{c' : s_c' == s_c and c' < c}
i.e. candidates are ordered by score descending, ties broken by candidate index ascending — the
order of a stable sort of -s (`np.argsort(-s, kind='stable')`) and of `jax.lax.top_k`. The score of
a relevant item is read out of the very score matrix it is ranked in (never a separate dot
product, which may round differently), so ties and near-ties are decided consistently.

Two entry points:
  * `rank_relevant`: for pools up to ~1M candidates held on device. Per query block it scores the
    whole pool once ([query_block, Nc], the block size chosen to fit `memory_budget_bytes`), reads
    the relevant items' scores out of it, counts who beats them (a compare-and-count, no sort), and
    takes the top-k. Optional candidate groups (e.g. languages) also give each relevant item's rank
    among the candidates of its own group, which is what a "queries in X against candidates in Y"
    setting needs, from the same pass.
  * `top_k`: streaming top-k over candidate blocks (`jax.lax.top_k` per block, merged with the
    running top-k), for corpora that are read shard by shard from disk (MIRACL-style).
"""
import logging
import math
from typing import Iterable, Sequence

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np

_PRECISION = jax.lax.Precision.HIGHEST  # f32 matmuls on TPU default to bf16 passes otherwise.


@dataclasses.dataclass(frozen=True)
class Ranking:
  """Output of `rank_relevant`.

  Attributes:
    ranks: [Nq, R] int32, 1-based rank of `relevant[q, r]` in the whole pool; 0 where
      `relevant[q, r]` is padding (-1).
    group_ranks: [Nq, R] int32 rank among the candidates of the relevant item's own group (0 for
      padding), or None when no groups were given.
    topk_indices: [Nq, k] int32 candidate indices, best first (tie rule above); -1 past the pool.
    topk_scores: [Nq, k] float32 scores of `topk_indices` (-inf past the pool).
  """
  ranks: np.ndarray
  group_ranks: np.ndarray | None
  topk_indices: np.ndarray
  topk_scores: np.ndarray


def _check_embeddings(x: np.ndarray, what: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim != 2:
    raise ValueError(f'{what}: expected [N, D] embeddings, got shape {x.shape}')
  if not np.isfinite(x).all():
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    raise ValueError(f'{what}: {len(bad)} rows contain NaN/Inf (first rows {bad[:5].tolist()})')
  return x


def _pad_rows(x: np.ndarray, n: int, value=0) -> np.ndarray:
  if x.shape[0] == n:
    return x
  pad = np.full((n - x.shape[0],) + x.shape[1:], value, x.dtype)
  return np.concatenate([x, pad])


def default_query_block(num_candidates: int, memory_budget_bytes: int = 256 << 20,
                        max_block: int = 256) -> int:
  """Largest power-of-two query block whose [block, Nc] f32 score rows fit the budget (>= 8)."""
  fit = max(1, memory_budget_bytes // (4 * max(num_candidates, 1)))
  return int(min(max_block, max(8, 2 ** int(math.log2(fit)))))


_CHUNK = 512  # candidates per counting step: a [B, R, 512] compare stays in cache (10x faster).
assert _CHUNK < 2**16  # see the packed counts in _rank_block


@jax.jit
def _rank_block(q, cands, valid, groups, rel, k_dummy):
  """Ranks and top-k for one query block against the whole pool (see module docstring).

  q: [B, D]; cands: [Nc, D] with Nc a multiple of _CHUNK; valid: [Nc] bool; groups: [Nc] int32;
  rel: [B, R] int32 (-1 = pad); k_dummy: [k] array whose length fixes k.
  """
  k = k_dummy.shape[0]
  b, nc = q.shape[0], cands.shape[0]
  s = jnp.matmul(q, cands.T, precision=_PRECISION)  # [B, Nc], the only score matrix
  s = jnp.where(valid[None, :], s, -jnp.inf)
  rel_ok = rel >= 0
  rel_c = jnp.where(rel_ok, rel, 0)
  t = jnp.take_along_axis(s, rel_c, axis=1)[:, :, None]  # [B, R, 1], bit-identical to s entries
  g = jnp.take(groups, rel_c)[:, :, None]

  # c' beats the relevant item c iff s' > t, or s' == t and c' < c. Counted chunk by chunk so the
  # [B, R, chunk] compare stays in cache; no sort. (One compare against nextafter(t, -inf) would
  # be wrong: XLA on CPU flushes that denormal to 0 when t == 0.)
  def count(acc, chunk):
    s_c, g_c, j_c = chunk
    s_c = s_c[:, None, :]
    beats = jnp.where(j_c[None, None, :] < rel_c[:, :, None], s_c >= t, s_c > t)
    # One reduction for both counts: 1 per beating candidate, + 2**16 if it is in the relevant
    # item's group. A chunk adds at most _CHUNK (< 2**16) to either field, so they never mix.
    packed = jnp.where(beats, jnp.where(g_c[None, None, :] == g, 65537, 1), 0).sum(-1)
    return (acc[0] + (packed & 0xFFFF), acc[1] + (packed >> 16)), None

  chunks = (s.reshape(b, nc // _CHUNK, _CHUNK).transpose(1, 0, 2),
            groups.reshape(-1, _CHUNK), jnp.arange(nc, dtype=jnp.int32).reshape(-1, _CHUNK))
  zeros = jnp.zeros(rel.shape, jnp.int32)
  (n_beat, n_beat_group), _ = jax.lax.scan(count, (zeros, zeros), chunks)
  top_s, top_i = jax.lax.top_k(s, k)
  top_i = jnp.where(jnp.isfinite(top_s), top_i, -1)
  return (jnp.where(rel_ok, 1 + n_beat, 0), jnp.where(rel_ok, 1 + n_beat_group, 0), top_i, top_s)


def rank_relevant(query_emb: np.ndarray, cand_emb: np.ndarray, relevant: np.ndarray, *,
                  cand_groups: np.ndarray | None = None, cand_mask: np.ndarray | None = None,
                  k: int = 10, query_block: int | None = None,
                  memory_budget_bytes: int = 256 << 20) -> Ranking:
  """Exact ranks of each query's relevant candidates, plus top-k lists.

  Inputs:
    query_emb: [Nq, D] float, L2-normalised.
    cand_emb: [Nc, D] float, L2-normalised; held on device for the whole call.
    relevant: [Nq, R] int candidate indices, -1 = padding (rows may have different counts).
    cand_groups: optional [Nc] int group per candidate (e.g. language); adds `group_ranks`.
    cand_mask: optional [Nc] bool; False removes a candidate from the pool (as if absent; indices
      keep their meaning). Relevant items must not be masked out.
    k: length of the top-k lists.
    query_block: queries per jit call; default from `memory_budget_bytes` (the [block, Nc] f32
      score rows are the dominant memory, so a 1M-passage pool uses small blocks).

  Recommended for evaluation pools that fit on device (LAReQA: 13k-20k candidates). For corpora read
  from disk shard by shard use `top_k`. Tie rule: see the module docstring.
  """
  query_emb = _check_embeddings(query_emb, 'query_emb')
  cand_emb = _check_embeddings(cand_emb, 'cand_emb')
  relevant = np.asarray(relevant, np.int64)
  nq, nc = query_emb.shape[0], cand_emb.shape[0]
  if query_emb.shape[1] != cand_emb.shape[1]:
    raise ValueError(f'dimension mismatch: queries {query_emb.shape}, candidates {cand_emb.shape}')
  if relevant.ndim != 2 or relevant.shape[0] != nq:
    raise ValueError(f'relevant: expected [{nq}, R], got shape {relevant.shape}')
  if (relevant >= nc).any() or (relevant < -1).any():
    raise ValueError(f'relevant: indices must be in [-1, {nc}); got {relevant.min()}..'
                     f'{relevant.max()}')
  valid = np.ones(nc, bool) if cand_mask is None else np.asarray(cand_mask, bool)
  if valid.shape != (nc,):
    raise ValueError(f'cand_mask: expected shape ({nc},), got {valid.shape}')
  masked_rel = relevant[(relevant >= 0)]
  if not valid[masked_rel].all():
    raise ValueError('relevant: some relevant candidates are excluded by cand_mask')
  groups = np.zeros(nc, np.int32) if cand_groups is None else np.asarray(cand_groups, np.int32)
  if groups.shape != (nc,):
    raise ValueError(f'cand_groups: expected shape ({nc},), got {groups.shape}')
  if k > nc:
    logging.info('rank_relevant: k=%d > %d candidates; top-k lists are padded with -1', k, nc)

  block = query_block or default_query_block(nc, memory_budget_bytes)
  r = max(relevant.shape[1], 1)
  relevant = relevant if relevant.shape[1] else np.full((nq, 1), -1, np.int64)
  nq_pad = -(-nq // block) * block
  q_pad = _pad_rows(query_emb, nq_pad)
  rel_pad = _pad_rows(relevant.astype(np.int32), nq_pad, -1)
  # Pad the pool to whole counting chunks; padded candidates are masked out (score -inf).
  nc_pad = -(-nc // _CHUNK) * _CHUNK
  cands = jnp.asarray(_pad_rows(cand_emb, nc_pad))
  valid_d = jnp.asarray(_pad_rows(valid, nc_pad, False))
  groups_d = jnp.asarray(_pad_rows(groups, nc_pad, -1))
  # k must not exceed the pool for lax.top_k; pad the lists afterwards.
  k_eff = min(k, nc)
  k_dummy = jnp.zeros((k_eff,), jnp.int8)
  outs = []
  for start in range(0, nq_pad, block):
    outs.append(_rank_block(jnp.asarray(q_pad[start:start + block]), cands, valid_d, groups_d,
                            jnp.asarray(rel_pad[start:start + block, :r]), k_dummy))
  ranks, group_ranks, top_i, top_s = (np.concatenate([np.asarray(o[i]) for o in outs])[:nq]
                                      for i in range(4))
  if k_eff < k:
    top_i = np.pad(top_i, ((0, 0), (0, k - k_eff)), constant_values=-1)
    top_s = np.pad(top_s, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
  return Ranking(ranks=ranks, group_ranks=group_ranks if cand_groups is not None else None,
                 topk_indices=top_i, topk_scores=top_s)


@jax.jit
def _merge_block(q, c, offset, n_valid, run_s, run_i):
  """Scores one (query block, candidate block) pair and merges its top-k into the running top-k.

  Running entries come first in the concatenation and hold lower candidate indices, so lax.top_k's
  lower-position-first tie rule keeps the global tie rule (score desc, index asc).
  """
  k = run_s.shape[1]
  s = jnp.matmul(q, c.T, precision=_PRECISION)
  col = jnp.arange(c.shape[0], dtype=jnp.int32)
  s = jnp.where(col[None, :] < n_valid, s, -jnp.inf)
  bs, bi = jax.lax.top_k(s, min(k, c.shape[0]))
  cat_s = jnp.concatenate([run_s, bs], axis=1)
  cat_i = jnp.concatenate([run_i, bi + offset], axis=1)
  top_s, pos = jax.lax.top_k(cat_s, k)
  return top_s, jnp.take_along_axis(cat_i, pos, axis=1)


def top_k(query_emb: np.ndarray, cand_shards: np.ndarray | Sequence[np.ndarray] | Iterable[np.ndarray],
          k: int, *, query_block: int = 256, cand_block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k over a corpus streamed in candidate blocks (tie rule: see module docstring).

  Inputs:
    query_emb: [Nq, D] float, L2-normalised.
    cand_shards: one [Nc, D] array (a np.memmap works) or an iterable of [n_i, D] shards, in
      candidate-index order; each is sent to the device one `cand_block` at a time, once.
    k: list length.
    query_block / cand_block: fixed jit shapes (the last blocks are padded, so one compile).

  Returns (scores [Nq, k] float32, indices [Nq, k] int32), best first; -inf / -1 past the corpus.
  Memory on device: Nq*k running lists + one [query_block, cand_block] score block.
  Recommended for corpora too large to hold on device (MIRACL); `rank_relevant` for LAReQA pools.
  """
  query_emb = _check_embeddings(query_emb, 'query_emb')
  nq, dim = query_emb.shape
  nq_pad = -(-nq // query_block) * query_block
  q_blocks = [jnp.asarray(b) for b in np.split(_pad_rows(query_emb, nq_pad), nq_pad // query_block)]
  run = [(jnp.full((query_block, k), -jnp.inf, jnp.float32),
          jnp.full((query_block, k), -1, jnp.int32)) for _ in q_blocks]
  if isinstance(cand_shards, np.ndarray):
    cand_shards = [cand_shards]
  offset = 0
  for s_i, shard in enumerate(cand_shards):
    shard = np.asarray(shard)
    if shard.ndim != 2 or shard.shape[1] != dim:
      raise ValueError(f'candidate shard {s_i}: expected [n, {dim}], got shape {shard.shape}')
    for start in range(0, shard.shape[0], cand_block):
      blk = _check_embeddings(shard[start:start + cand_block], f'candidate shard {s_i}')
      n_valid = blk.shape[0]
      c = jnp.asarray(_pad_rows(blk, cand_block))
      run = [_merge_block(qb, c, jnp.int32(offset), jnp.int32(n_valid), rs, ri)
             for qb, (rs, ri) in zip(q_blocks, run)]
      offset += n_valid
  scores = np.concatenate([np.asarray(rs) for rs, _ in run])[:nq]
  indices = np.concatenate([np.asarray(ri) for _, ri in run])[:nq]
  indices = np.where(np.isfinite(scores), indices, -1)
  return scores, indices
