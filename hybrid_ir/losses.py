"""Contrastive losses for dual encoders: InfoNCE over the global batch, plus a parallel-query MSE.

All functions are pure and jit-able. Inside `jax.jit` the inputs are *global* arrays (sharded over
the mesh), so "in-batch negatives" are the whole global batch: XLA inserts the all-gather. Labels
are therefore global row indices (`arange(B)`), never device-local ones — the trap that makes
per-device label offsets wrong once hard negatives are gathered simply cannot happen here.

Layout used throughout (B = global batch size, K = hard negatives per query, D = embedding dim):
  q:   [B, D]     query embeddings (L2-normalised by the encoder).
  p:   [B, D]     p[i] is the positive passage of q[i].
  neg: [B, K, D]  or [N, D]: hard-negative passages; all of them are negatives for every query.
  groups: [B] int  group id of each (query, positive) pair; translations of one item share it.
"""
from typing import Any

import jax
import jax.numpy as jnp
import optax

VARIANTS = ("standard", "paper")
# Finite (not -inf) so that masked logits never produce inf - inf = nan in the softmax.
_MASKED = -1e9


def temperature_from_log(log_temperature: jax.Array, min_temperature: float = 0.01) -> jax.Array:
  """exp(log_temperature), clipped from below.

  Inputs: a learnable scalar parameter. Recommended for a learnable temperature (CLIP-style): the
  log parameterisation keeps it positive, and the floor (CLIP's max logit scale of 100) stops the
  logits exploding early in training. Related: pass a plain float to `info_nce` for a fixed one.
  """
  return jnp.maximum(jnp.exp(log_temperature), min_temperature)


def _masked_xent(logits: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy with the diagonal as label; mask False = excluded from the softmax."""
  logits = jnp.where(mask, logits, _MASKED)
  labels = jnp.arange(logits.shape[0])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  acc = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return loss.mean(), acc.mean()


def info_nce(
    q: jax.Array,
    p: jax.Array,
    neg: jax.Array | None = None,
    *,
    temperature: float | jax.Array = 0.05,
    variant: str = "standard",
    symmetric: bool = False,
    groups: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
  """InfoNCE with in-batch (global) and hard negatives.

  Inputs:
    q, p: [B, D] queries and their positives (row i is a pair); neg: hard negatives [B, K, D] or
    [N, D], or None. temperature: float or scalar array (see `temperature_from_log`).
    variant:
      'standard' (DPR / Tevatron / sentence-transformers MultipleNegativesRankingLoss): the softmax
        of query i runs over all B positives and all hard negatives; label = i.
      'paper' (Elmahdy et al. as printed): the softmax runs over query i's own positive and the
        batch's hard negatives only — other queries' positives are excluded. Needs `neg`.
    symmetric: also add the passage->query loss (softmax of passage i over the B queries; there
      are no "negative queries", so this direction is the same for both variants) and average.
    groups: [B] int group ids. When given, a positive of another pair with the same group id
      (e.g. the same answer in another language) is masked out of query i's softmax instead of
      counted as a negative (false-negative masking); same for the symmetric direction.
  Returns (loss, metrics) with metrics 'loss_q2p', 'acc_q2p' (top-1 in-batch), ['loss_p2q',
  'acc_p2q'], 'temperature'.
  Recommended: 'standard' + group masking for hybrid batches (an X-Y batch can hold two
  translations of one item). 'paper' reproduces the printed formula but learns only from hard
  negatives. Related: `parallel_query_mse` as an auxiliary term.
  """
  if variant not in VARIANTS:
    raise ValueError(f"info_nce: unknown variant {variant!r}; valid: {VARIANTS}")
  if q.ndim != 2 or p.shape != q.shape:
    raise ValueError(f"info_nce: q and p must both be [B, D]; got {q.shape} and {p.shape}")
  if neg is not None and neg.ndim == 3:
    neg = neg.reshape(-1, neg.shape[-1])
  if variant == "paper" and (neg is None or neg.shape[0] == 0):
    raise ValueError("info_nce: variant 'paper' needs hard negatives (its softmax would hold the "
                     "positive alone); give `neg` or use variant 'standard'")
  b = q.shape[0]
  # Similarities in f32: bf16 logits / small temperatures lose the ranking signal.
  q, p = q.astype(jnp.float32), p.astype(jnp.float32)
  qp = q @ p.T / temperature  # [B, B]; the diagonal are the positives.
  eye = jnp.eye(b, dtype=bool)
  if variant == "paper":
    qp_mask = eye
  elif groups is not None:
    qp_mask = eye | (groups[:, None] != groups[None, :])
  else:
    qp_mask = jnp.ones((b, b), dtype=bool)
  logits, mask = qp, qp_mask
  if neg is not None:
    qn = q @ neg.astype(jnp.float32).T / temperature  # [B, N]
    logits = jnp.concatenate([qp, qn], axis=1)
    mask = jnp.concatenate([qp_mask, jnp.ones(qn.shape, dtype=bool)], axis=1)
  loss, acc = _masked_xent(logits, mask)
  metrics = {"loss_q2p": loss, "acc_q2p": acc, "temperature": jnp.asarray(temperature)}
  if symmetric:
    pq_mask = eye | (groups[:, None] != groups[None, :]) if groups is not None else None
    pq_mask = jnp.ones((b, b), dtype=bool) if pq_mask is None else pq_mask
    loss_pq, acc_pq = _masked_xent(qp.T, pq_mask)
    metrics.update(loss_p2q=loss_pq, acc_p2q=acc_pq)
    loss = (loss + loss_pq) / 2
  return loss, metrics


def parallel_query_mse(
    q: jax.Array, groups: jax.Array, langs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean squared distance between embeddings of parallel queries.

  Inputs: q [B, D] query embeddings; groups [B] int group ids; langs [B] int language ids. A pair
  (i, j), i != j, counts when groups match and languages differ (the same question in two
  languages). The MSE is mean over counted pairs of mean_d (q_i - q_j)^2; 0 when there are none.
  Returns (mse, number_of_ordered_pairs).
  Recommended as a small auxiliary term (weight ~0.1-1) to pull translations together, to study
  how batch composition affects cross-lingual alignment. It needs batches that contain parallel
  queries (X-Y batches with shared group ids); X-X-mono batches give no pairs and contribute 0.
  Related: `info_nce(groups=...)` masks those same pairs out of the contrastive negatives.
  """
  q = q.astype(jnp.float32)
  pair = (groups[:, None] == groups[None, :]) & (langs[:, None] != langs[None, :])
  # ||a-b||^2 = |a|^2 + |b|^2 - 2ab, computed on the whole [B, B] matrix to stay a matmul.
  sq = jnp.sum(q * q, axis=-1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * q @ q.T, 0.0) / q.shape[-1]
  n = pair.sum()
  mse = jnp.where(n > 0, jnp.sum(jnp.where(pair, d2, 0.0)) / jnp.maximum(n, 1), 0.0)
  return mse, n
