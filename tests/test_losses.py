"""losses.py on toy inputs whose values are computed by hand (math.log / math.exp below)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_ir import losses

E = math.e
# q0=(1,0), q1=(0,1); positives equal to their queries; one hard negative n=(0.6, 0.8).
Q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
P = jnp.array([[1.0, 0.0], [0.0, 1.0]])
N = jnp.array([[0.6, 0.8]])


def test_standard_uses_other_positives_and_hard_negatives():
  loss, m = losses.info_nce(Q, P, N, temperature=1.0)
  # Row 0 logits [1, 0, .6], row 1 logits [0, 1, .8]; label = diagonal.
  want = ((-1 + math.log(E + 1 + math.exp(.6))) + (-1 + math.log(1 + E + math.exp(.8)))) / 2
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(m["acc_q2p"]) == 1.0


def test_paper_variant_drops_other_positives():
  loss, _ = losses.info_nce(Q, P, N, temperature=1.0, variant="paper")
  want = ((-1 + math.log(E + math.exp(.6))) + (-1 + math.log(E + math.exp(.8)))) / 2
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_temperature_scales_logits():
  loss, _ = losses.info_nce(Q, P, None, temperature=0.5)
  want = -2 + math.log(math.exp(2) + 1)  # both rows: logits [2, 0]
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  # Learnable log-temperature gives the same value and a gradient.
  f = lambda lt: losses.info_nce(Q, P, None, temperature=losses.temperature_from_log(lt))[0]
  np.testing.assert_allclose(f(jnp.log(0.5)), want, rtol=1e-6)
  assert abs(float(jax.grad(f)(jnp.log(0.5)))) > 0


def test_identity_masking_removes_same_passage_from_negatives():
  # Same identity: the other positive is the same passage (a translation), not a negative ->
  # like 'paper' here, and the mask is counted.
  loss, m = losses.info_nce(Q, P, N, temperature=1.0, identities=jnp.array([7, 7]))
  want = ((-1 + math.log(E + math.exp(.6))) + (-1 + math.log(E + math.exp(.8)))) / 2
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(m["masked_in_batch"]) == 2
  # Different identities: identical to no masking.
  a, m = losses.info_nce(Q, P, N, temperature=1.0, identities=jnp.array([1, 2]))
  b, _ = losses.info_nce(Q, P, N, temperature=1.0)
  np.testing.assert_allclose(a, b, rtol=1e-7)
  assert float(m["masked_in_batch"]) == 0


def test_hard_negative_with_a_positive_identity_is_masked_for_every_query():
  # The negative is passage 2, query 1's own positive (e.g. in another language): masked in
  # both rows -> the loss without negatives.
  loss, m = losses.info_nce(Q, P, N, temperature=1.0, identities=jnp.array([1, 2]),
                            negative_identities=jnp.array([2]))
  np.testing.assert_allclose(loss, losses.info_nce(Q, P, None, temperature=1.0)[0], rtol=1e-6)
  assert float(m["masked_negatives"]) == 1
  # Another passage: kept.
  a, m = losses.info_nce(Q, P, N, temperature=1.0, identities=jnp.array([1, 2]),
                         negative_identities=jnp.array([3]))
  np.testing.assert_allclose(a, losses.info_nce(Q, P, N, temperature=1.0)[0], rtol=1e-7)
  assert float(m["masked_negatives"]) == 0


def test_invalid_negative_slots_are_left_out():
  n2 = jnp.concatenate([N, jnp.array([[5.0, 5.0]])])  # a huge logit, if it were counted
  a, _ = losses.info_nce(Q, P, n2, temperature=1.0, negative_valid=jnp.array([True, False]))
  np.testing.assert_allclose(a, losses.info_nce(Q, P, N, temperature=1.0)[0], rtol=1e-6)
  # 'paper' with every negative missing: the softmax holds the positive alone -> loss 0.
  b, _ = losses.info_nce(Q, P, N, temperature=1.0, variant="paper",
                         negative_valid=jnp.array([False]))
  np.testing.assert_allclose(b, 0.0, atol=1e-6)


def test_symmetric_averages_both_directions():
  p = jnp.array([[1.0, 0.0], [0.6, 0.8]])
  loss, m = losses.info_nce(Q, p, None, temperature=1.0, symmetric=True)
  # q->p: row0 [1, .6], row1 [0, .8]; p->q: row0 [1, 0], row1 [.6, .8].
  q2p = ((-1 + math.log(E + math.exp(.6))) + (-.8 + math.log(1 + math.exp(.8)))) / 2
  p2q = ((-1 + math.log(E + 1)) + (-.8 + math.log(math.exp(.6) + math.exp(.8)))) / 2
  np.testing.assert_allclose(m["loss_q2p"], q2p, rtol=1e-6)
  np.testing.assert_allclose(m["loss_p2q"], p2q, rtol=1e-6)
  np.testing.assert_allclose(loss, (q2p + p2q) / 2, rtol=1e-6)


def test_hard_negative_layouts_agree_and_grads_are_finite():
  rng = np.random.default_rng(0)
  q, p = rng.normal(size=(2, 4, 8)).astype(np.float32)
  neg = rng.normal(size=(4, 3, 8)).astype(np.float32)
  a, _ = losses.info_nce(q, p, neg, variant="paper", identities=jnp.array([0, 0, 1, 1]))
  b, _ = losses.info_nce(q, p, neg.reshape(12, 8), variant="paper", identities=jnp.array([0, 0, 1, 1]))
  np.testing.assert_allclose(a, b, rtol=1e-6)
  g = jax.grad(lambda q: losses.info_nce(q, p, neg, variant="paper", symmetric=True,
                                         identities=jnp.array([0, 0, 1, 1]))[0])(jnp.asarray(q))
  assert np.isfinite(np.asarray(g)).all()


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="variant"):
    losses.info_nce(Q, P, N, variant="dpr")
  with pytest.raises(ValueError, match="hard negatives"):
    losses.info_nce(Q, P, None, variant="paper")
  with pytest.raises(ValueError, match=r"\[B, D\]"):
    losses.info_nce(Q, P[:1], N)
