"""Paired bootstrap and randomisation test on synthetic runs whose answer is known."""
import dataclasses

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


def test_strata_give_the_macro_average_and_its_ci():
  # Two languages of unequal size: 900 queries gain exactly 0, 100 queries gain exactly 0.2.
  # Query-weighted mean gain = 0.02; the macro average over the two languages = (0 + 0.2) / 2 = 0.1.
  b = np.zeros(1000)
  a = np.concatenate([np.zeros(900), np.full(100, 0.2)])
  strata = np.array(["en"] * 900 + ["de"] * 100)
  assert stats.macro_mean(a - b, strata) == pytest.approx(0.1)
  mean, low, high = stats.paired_bootstrap(a, b, strata=strata, n_resamples=500)
  # Constant differences within each stratum: every resample has the same macro mean.
  assert mean == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
  plain_mean, _, _ = stats.paired_bootstrap(a, b, n_resamples=500)
  assert plain_mean == pytest.approx(0.02)
  assert stats.paired_randomization(a, b, strata=strata, n_resamples=500) < 0.01


def test_strata_of_equal_size_match_the_plain_statistics():
  rng = np.random.default_rng(3)
  a, b = rng.normal(0.1, 1, 400), rng.normal(0, 1, 400)
  strata = np.repeat(["x", "y"], 200)
  assert stats.macro_mean(a - b, strata) == pytest.approx(np.mean(a - b))
  p_plain = stats.paired_randomization(a, b, n_resamples=2000, seed=1)
  p_strat = stats.paired_randomization(a, b, n_resamples=2000, seed=1, strata=strata)
  assert p_plain == pytest.approx(p_strat)  # equal weights: the same statistic, same flips
  with pytest.raises(ValueError, match="one label per value"):
    stats.paired_bootstrap(a, b, strata=strata[:10])


# --- two-level (seeds, then queries) bootstrap: cases whose answer is known ---

def _langs(n, k=7):
  return np.repeat(np.arange(k), -(-n // k))[:n]


def test_seed_bootstrap_with_identical_seeds_is_the_query_bootstrap():
  rng = np.random.default_rng(0)
  n = 3000
  base = rng.random(n)
  r = stats.seed_bootstrap(np.stack([base] * 3), strata=_langs(n), n_resamples=4000)
  mean, low, high = stats.paired_bootstrap(base, np.zeros(n), strata=_langs(n), n_resamples=4000)
  assert r.mean == pytest.approx(mean) and r.seed_sd == pytest.approx(0, abs=1e-12)
  assert r.ci_high - r.ci_low == pytest.approx(high - low, rel=0.1)


def test_seed_bootstrap_width_follows_the_seed_spread():
  # Every query scores the same within a seed; seeds differ by N(0, .02): the CI of the mean is
  # the bootstrap of S seed means, half-width ~1.96 sd / sqrt(S).
  rng = np.random.default_rng(1)
  n, s = 2000, 20
  offsets = rng.normal(0, 0.02, s)
  r = stats.seed_bootstrap(0.5 + offsets[:, None] + np.zeros((s, n)), strata=_langs(n),
                           n_resamples=4000)
  assert (r.ci_high - r.ci_low) / 2 == pytest.approx(1.96 * np.std(offsets) / np.sqrt(s), rel=0.1)
  assert r.seed_sd == pytest.approx(np.std(offsets, ddof=1))
  assert r.seed_means == pytest.approx(tuple(0.5 + offsets))


def test_seed_bootstrap_difference_exact_shift_and_no_difference():
  rng = np.random.default_rng(2)
  n = 2000
  base = rng.random(n)
  a = np.stack([base + rng.normal(0, 0.001, n) for _ in range(3)])  # seeds differ a little
  r = stats.seed_bootstrap(a, a - 0.01, strata=_langs(n), n_resamples=2000)
  assert r.mean == pytest.approx(0.01) and r.p_value == 1 / 2000  # the floor
  # Three more seeds of the same distribution: no difference is found.
  b = np.stack([base + rng.normal(0, 0.001, n) for _ in range(3)])
  r = stats.seed_bootstrap(a, b, strata=_langs(n), n_resamples=2000)
  assert r.ci_low < 0 < r.ci_high and r.p_value > 0.05
  with pytest.raises(ValueError, match='different queries'):
    stats.seed_bootstrap(a, b[:, :10])


# --- one-seed comparisons widened by a seed sd measured elsewhere ---

def test_widen_by_seed_sd_zero_sd_keeps_the_query_ci_and_known_seed_part():
  c = stats.PairedComparison(mean_diff=0.01, ci_low=0.004, ci_high=0.016, p_value=0.001, n=100)
  low, high, p = stats.widen_by_seed_sd(c, 0.0)
  assert (low, high) == pytest.approx((0.004, 0.016))
  # No query noise at all: the half-width is z * sqrt(2) * sd, so a difference of exactly that
  # size sits on the CI's edge, p = .05.
  flat = stats.PairedComparison(mean_diff=1.959964 * np.sqrt(2) * 0.01, ci_low=0, ci_high=0,
                                p_value=0.0, n=100)
  flat = dataclasses.replace(flat, ci_low=flat.mean_diff, ci_high=flat.mean_diff)
  low, high, p = stats.widen_by_seed_sd(flat, 0.01)
  assert low == pytest.approx(0, abs=1e-6) and p == pytest.approx(0.05, abs=1e-4)


def test_widened_ci_covers_seed_noise_where_the_query_ci_does_not():
  # Two configs of equal true quality; each run adds its own training-seed offset N(0, .01) to
  # every query. The query-only CI of their difference misses 0 far more than 5% of the time;
  # the CI widened by the (known) seed sd covers it about 95% of the time.
  rng = np.random.default_rng(0)
  n, sims, sd = 200, 200, 0.01
  langs = _langs(n)
  truth = rng.random(n)
  query_only = widened = 0
  for s in range(sims):
    a = truth + rng.normal(0, 0.02, n) + rng.normal(0, sd)
    b = truth + rng.normal(0, 0.02, n) + rng.normal(0, sd)
    c = stats.compare(a, b, n_resamples=400, seed=s, strata=langs)
    query_only += c.ci_low <= 0 <= c.ci_high
    low, high, _ = stats.widen_by_seed_sd(c, sd)
    widened += low <= 0 <= high
  assert query_only / sims < 0.6
  assert 0.9 <= widened / sims <= 0.99
