"""Contrastive loss for dual encoders: InfoNCE over the global batch, false negatives masked.

All functions are pure and jit-able. Inside `jax.jit` the inputs are *global* arrays (sharded over
the mesh), so "in-batch negatives" are the whole global batch: XLA inserts the all-gather. Labels
are therefore global row indices (`arange(B)`), never device-local ones — the trap that makes
per-device label offsets wrong once hard negatives are gathered simply cannot happen here.

Layout used throughout (B = global batch size, K = hard negatives per query, D = embedding dim):
  q:   [B, D]     query embeddings (L2-normalised by the encoder).
  p:   [B, D]     p[i] is the positive passage of q[i].
  neg: [B, K, D]  or [N, D]: hard-negative passages; all of them are negatives for every query.
  identities: [B] int  passage identity of each positive; translations of one passage share it.
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
    identities: jax.Array | None = None,
    negative_identities: jax.Array | None = None,
    negative_valid: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
  """InfoNCE with in-batch (global) and hard negatives, false negatives masked.

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
    identities: [B] int passage identity of each positive (the same answer sentence in any
      language, the same mMARCO pid). A positive p_j with the identity of p_i (j != i) is
      masked out of query i's softmax instead of counted as a negative; same for the symmetric
      direction. The sampler already keeps identities distinct within a batch, so this is a
      safety net: `metrics['masked_in_batch']` counts what it masked.
    negative_identities: [N] identity of each hard negative. A negative with the identity of
      any positive in the batch is masked for every query: for its own query it is the positive
      (perhaps in another language), for the others it is already in the softmax as that
      positive. negative_valid: [N] bool; False slots (a source or query with fewer negatives
      than the batch's K) are masked too.
  Returns (loss, metrics) with metrics 'loss_q2p', 'acc_q2p' (top-1 in-batch), ['loss_p2q',
  'acc_p2q'], 'temperature', 'masked_in_batch' (off-diagonal pairs masked) and, with `neg`,
  'masked_negatives' (valid negatives masked).
  Recommended: 'standard' with identities for hybrid batches. 'paper' reproduces the printed
  formula but learns only from hard negatives.
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
  distinct = (jnp.ones((b, b), dtype=bool) if identities is None
              else eye | (identities[:, None] != identities[None, :]))
  qp_mask = eye if variant == "paper" else distinct
  metrics = {"temperature": jnp.asarray(temperature),
             "masked_in_batch": jnp.sum(~distinct).astype(jnp.float32)}
  logits, mask = qp, qp_mask
  if neg is not None:
    n = neg.shape[0]
    keep = jnp.ones((n,), bool) if negative_valid is None else negative_valid.astype(bool)
    if negative_identities is not None and identities is not None:
      same = (negative_identities[None, :] == identities[:, None]).any(axis=0)  # [N]
      metrics["masked_negatives"] = jnp.sum(same & keep).astype(jnp.float32)
      keep = keep & ~same
    qn = q @ neg.astype(jnp.float32).T / temperature  # [B, N]
    logits = jnp.concatenate([qp, qn], axis=1)
    mask = jnp.concatenate([qp_mask, jnp.broadcast_to(keep[None, :], qn.shape)], axis=1)
  loss, acc = _masked_xent(logits, mask)
  metrics.update(loss_q2p=loss, acc_q2p=acc)
  if symmetric:
    loss_pq, acc_pq = _masked_xent(qp.T, distinct)
    metrics.update(loss_p2q=loss_pq, acc_p2q=acc_pq)
    loss = (loss + loss_pq) / 2
  return loss, metrics


def distill_mse(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Multilingual distillation's term (hybrid_ir.distill): the mean over rows of the squared L2
  distance between the student's and the teacher's embedding of a row.

  Inputs: student [B, D] (the embeddings being trained, any language version), teacher [B, D]
  (the frozen teacher's embedding of the same group's pivot version; no gradient flows to it).
  For unit vectors this is 2 - 2 cos, so it reads on the same scale whatever D is; it is D times
  the element-wise mean sentence-transformers' MSELoss reports. The gradient with respect to
  row i is 2 (s_i - t_i) / B.
  """
  diff = student.astype(jnp.float32) - jax.lax.stop_gradient(teacher.astype(jnp.float32))
  return jnp.mean(jnp.sum(diff * diff, axis=-1))
