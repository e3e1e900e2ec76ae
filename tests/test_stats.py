"""Paired bootstrap and randomisation test on synthetic runs whose answer is known."""
import numpy as np
import pytest
import scipy.stats

from hybrid_ir.evaluators import stats


def _runs(shift, n=300, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.uniform(0, 1, n)
  return a, a - shift + rng.normal(0, 0.2, n)


def test_identical_runs_give_zero_difference_and_p_one():
  a, _ = _runs(0.0)
  mean, low, high = stats.paired_bootstrap(a, a.copy())
  assert mean == 0.0 and low <= 0.0 <= high
  # Every sign flip of an all-zero difference is "as extreme" as the observed 0.
  assert stats.paired_randomization(a, a.copy(), n_resamples=999) == 1.0


def test_large_shift_is_significant_and_ci_covers_it():
  a, b = _runs(0.1)
  res = stats.compare(a, b, n_resamples=2000, seed=1)
  assert res.p_value < 0.01
  assert 0.05 < res.ci_low < 0.1 < res.ci_high < 0.15
  assert res.n == len(a)


def test_no_effect_is_not_significant_on_average():
  # Under H0 the p-value is uniform: over 20 seeds, few are below 0.05.
  ps = [stats.paired_randomization(*_runs(0.0, n=100, seed=s), n_resamples=500, seed=s)
        for s in range(20)]
  assert sum(p < 0.05 for p in ps) <= 4
  assert np.mean(ps) > 0.3


def test_seeded_and_reproducible():
  a, b = _runs(0.02)
  assert stats.compare(a, b, seed=3) == stats.compare(a, b, seed=3)
  assert stats.paired_bootstrap(a, b, seed=3) != stats.paired_bootstrap(a, b, seed=4)


def test_matches_scipy_bootstrap_and_permutation_test():
  a, b = _runs(0.015, n=200, seed=7)
  d = a - b
  mean, low, high = stats.paired_bootstrap(a, b, n_resamples=20000, seed=0)
  ref = scipy.stats.bootstrap((d,), np.mean, n_resamples=20000, method='percentile',
                              confidence_level=0.95, random_state=0)
  assert mean == pytest.approx(d.mean())
  # Monte-Carlo CIs of 20k resamples agree to a small fraction of their width.
  width = high - low
  assert low == pytest.approx(ref.confidence_interval.low, abs=0.05 * width)
  assert high == pytest.approx(ref.confidence_interval.high, abs=0.05 * width)

  p = stats.paired_randomization(a, b, n_resamples=20000, seed=0)
  ref_p = scipy.stats.permutation_test(
      (a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type='samples',
      n_resamples=20000, alternative='two-sided', random_state=0, vectorized=True).pvalue
  assert 0.001 < ref_p < 0.5  # a case where the p-value is neither trivial nor saturated
  assert p == pytest.approx(ref_p, abs=0.01)


def test_bad_input_raises():
  with pytest.raises(ValueError, match='one length'):
    stats.paired_bootstrap(np.zeros(3), np.zeros(4))
  with pytest.raises(ValueError, match='NaN'):
    stats.paired_randomization(np.array([0.1, np.nan]), np.array([0.2, 0.3]))
