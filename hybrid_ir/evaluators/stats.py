"""Paired significance for two runs' per-query values: bootstrap CI and randomisation test.

Inputs are aligned per-query vectors (e.g. `LareqaResult.per_query('mul_map')` of two runs on the
same dataset): element i of both arrays is the same query (or query x language unit).

  paired_bootstrap(a, b): resamples queries with replacement and returns the mean difference
    mean(a - b) with a percentile 95% CI. Recommended for reporting "how big is the gain".
  paired_randomization(a, b): the sign-flip (approximate permutation) test of H0 "a and b are
    exchangeable per query", two-sided on |mean(a - b)|. Recommended for "is the gain real"
    (Smucker et al. 2007 found it the most reliable IR test). The p-value counts the observed
    assignment, p = (1 + #{|d*| >= |d|}) / (1 + n_resamples), so it is never 0.
Both are seeded, vectorised numpy, and drop no value silently (NaNs raise).
Related: scipy.stats.bootstrap / permutation_test(permutation_type='samples') agree (tested).
"""
import dataclasses
import math
import statistics

import numpy as np


@dataclasses.dataclass(frozen=True)
class PairedComparison:
  mean_diff: float
  ci_low: float
  ci_high: float
  p_value: float
  n: int


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f'paired values must be two 1-D arrays of one length; got {a.shape}, {b.shape}')
  if a.size == 0:
    raise ValueError('paired values are empty')
  bad = np.flatnonzero(np.isnan(a) | np.isnan(b))
  if bad.size:
    raise ValueError(f'{bad.size} paired values are NaN (first at {bad[:5].tolist()}); '
                     'exclude unjudged queries explicitly before comparing')
  return a - b


def _chunks(total: int, n: int, budget: int = 1 << 22):
  """Resample counts per step so that a [step, n] array stays under `budget` elements."""
  step = max(1, budget // max(n, 1))
  for start in range(0, total, step):
    yield min(step, total - start)


def _strata(strata, n: int) -> list[np.ndarray] | None:
  if strata is None:
    return None
  strata = np.asarray(strata)
  if strata.shape != (n,):
    raise ValueError(f'strata must have one label per value ({n}); got shape {strata.shape}')
  return [np.flatnonzero(strata == s) for s in np.unique(strata)]


def macro_mean(values: np.ndarray, strata=None) -> float:
  """Mean of the per-stratum means (e.g. macro average over query languages)."""
  values = np.asarray(values, np.float64)
  groups = _strata(strata, values.size)
  return float(values.mean() if groups is None else np.mean([values[g].mean() for g in groups]))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0, strata=None
                     ) -> tuple[float, float, float]:
  """(mean difference, CI low, CI high) of mean(a - b); percentile bootstrap over queries.

  With `strata` (one label per query, e.g. its language) the statistic is the macro average
  over strata of the per-stratum mean difference -- the way the paper averages over languages --
  and queries are resampled within their stratum.
  """
  d = _diff(a, b)
  rng = np.random.default_rng(seed)
  groups = _strata(strata, d.size)
  if groups is not None:
    means = np.zeros(n_resamples)
    for g in groups:
      start = 0
      for m in _chunks(n_resamples, g.size):
        means[start:start + m] += d[g][rng.integers(0, g.size, (m, g.size))].mean(axis=1)
        start += m
    means /= len(groups)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return macro_mean(d, strata), float(low), float(high)
  means = np.concatenate([d[rng.integers(0, d.size, (m, d.size))].mean(axis=1)
                          for m in _chunks(n_resamples, d.size)])
  alpha = (1 - confidence) / 2
  low, high = np.quantile(means, [alpha, 1 - alpha])
  return float(d.mean()), float(low), float(high)


def paired_randomization(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 10_000,
                         seed: int = 0, strata=None) -> float:
  """Two-sided sign-flip randomisation test p-value for mean(a - b) == 0.

  With `strata`, the statistic is the macro average over strata (see `paired_bootstrap`).
  """
  d = _diff(a, b)
  groups = _strata(strata, d.size)
  weights = np.full(d.size, 1.0 / d.size)
  if groups is not None:
    for g in groups:
      weights[g] = 1.0 / (len(groups) * g.size)
  wd = weights * d
  observed = abs(wd.sum())
  rng = np.random.default_rng(seed)
  hits = 0
  for m in _chunks(n_resamples, d.size):
    signs = rng.integers(0, 2, (m, d.size), dtype=np.int8) * 2 - 1
    # Tiny tolerance so that flips reproducing |observed| up to rounding count as "as extreme".
    hits += int((np.abs(signs @ wd) >= observed - 1e-12).sum())
  return (1 + hits) / (1 + n_resamples)


def compare(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 10_000, confidence: float = 0.95,
            seed: int = 0, strata=None) -> PairedComparison:
  """Bootstrap CI and randomisation p-value in one call (same seed for both)."""
  mean, low, high = paired_bootstrap(a, b, n_resamples=n_resamples, confidence=confidence,
                                     seed=seed, strata=strata)
  p = paired_randomization(a, b, n_resamples=n_resamples, seed=seed, strata=strata)
  return PairedComparison(mean_diff=mean, ci_low=low, ci_high=high, p_value=p, n=len(a))


@dataclasses.dataclass(frozen=True)
class SeedComparison:
  """Of a mean over training seeds (or a difference of two): point value, the two-level
  bootstrap CI, its two-sided p-value (None for a single run set), and the seed-level spread."""
  mean: float
  ci_low: float
  ci_high: float
  p_value: float | None
  seed_means: tuple[float, ...]  # the macro metric of each seed (of `a`)
  seed_sd: float  # their standard deviation (ddof=1; 0 for one seed)


def _seed_matrix(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
    raise ValueError(f'{name}: expected [seeds, queries] values, got shape {x.shape}')
  if np.isnan(x).any():
    raise ValueError(f'{name}: {int(np.isnan(x).sum())} values are NaN; exclude them first')
  return x


def seed_bootstrap(a, b=None, *, strata=None, n_resamples: int = 10_000,
                   confidence: float = 0.95, seed: int = 0) -> SeedComparison:
  """Two-level bootstrap over training seeds, then queries: a CI that covers both sources of
  variance, of mean(a) or of mean(a) - mean(b).

  Inputs: a [S_a, N], b [S_b, N] or None: per-query values of each training seed's run (row s
  = seed s; column i = the same query in every row of a and b); strata [N] (query language) for
  the macro average and for resampling queries within their stratum.
  Each resample draws S_a seeds of a and S_b of b with replacement (independently: seeds of two
  strategies are separate runs), and one stratified resample of queries shared by a and b (so
  queries stay paired); the statistic is the macro average over strata of the seed-averaged
  values (difference of the two). p is the two-sided bootstrap p-value of "no difference":
  2 x the share of resampled differences on the other side of 0 (floor 1 / n_resamples).
  Recommended for: comparing strategies across seeds (hybrid vs X-X-mono); with one seed it
  reduces to the stratified query bootstrap. With few seeds (3) the seed level is coarse: report
  the per-seed values (`seed_means`) next to the CI. Related: `paired_bootstrap` (one seed).
  """
  a = _seed_matrix(a, 'a')
  b = None if b is None else _seed_matrix(b, 'b')
  n = a.shape[1]
  if b is not None and b.shape[1] != n:
    raise ValueError(f'a and b cover different queries: {n} vs {b.shape[1]}')
  groups = _strata(strata, n) or [np.arange(n)]
  rng = np.random.default_rng(seed)

  def macro(x):  # [S, N] -> macro average over strata of the seed-averaged values
    return float(np.mean([x[:, g].mean() for g in groups]))

  stats_ = np.zeros(n_resamples)
  for start in range(0, n_resamples, 256):
    m = min(256, n_resamples - start)
    # One draw of seeds per resample, shared by every stratum (a seed is one whole run).
    sa = rng.integers(0, a.shape[0], (m, a.shape[0]))  # [m, S_a]
    sb = None if b is None else rng.integers(0, b.shape[0], (m, b.shape[0]))
    for g in groups:
      q = g[rng.integers(0, g.size, (m, g.size))]  # [m, |g|], shared by a and b
      va = a[sa[:, :, None], q[:, None, :]].mean(axis=(1, 2))
      if b is not None:
        va = va - b[sb[:, :, None], q[:, None, :]].mean(axis=(1, 2))
      stats_[start:start + m] += va / len(groups)
  point = macro(a) - (macro(b) if b is not None else 0.0)
  alpha = (1 - confidence) / 2
  low, high = np.quantile(stats_, [alpha, 1 - alpha])
  p = None
  if b is not None:
    other_side = np.mean(stats_ <= 0) if point > 0 else np.mean(stats_ >= 0)
    p = float(min(1.0, max(2 * other_side, 1.0 / n_resamples)))
  per_seed = tuple(float(np.mean([row[g].mean() for g in groups])) for row in a)
  return SeedComparison(mean=point, ci_low=float(low), ci_high=float(high), p_value=p,
                        seed_means=per_seed,
                        seed_sd=float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0)


def widen_by_seed_sd(c: PairedComparison, seed_sd: float, *, confidence: float = 0.95
                     ) -> tuple[float, float, float]:
  """(CI low, CI high, two-sided p) of a one-seed paired difference, widened by training-seed
  variance measured elsewhere: Var(Δ) = Var_queries(Δ) + 2 seed_sd² (each side is one run).

  Inputs: `c` from `compare` (its percentile CI gives the query part, read as a normal
  half-width); `seed_sd`: the sd over training seeds of the macro metric of a comparable run
  (e.g. the base config's 3 seeds, `SeedComparison.seed_sd`). Normal approximation.
  Recommended for: ablation and sweep tables that have one seed per row, when training every
  row on several seeds costs too much; it assumes each row's seed spread is the base's. Where
  rows do have several seeds, `seed_bootstrap` measures it instead of assuming it.
  """
  z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
  se = math.hypot((c.ci_high - c.ci_low) / (2 * z), math.sqrt(2) * seed_sd)
  if se == 0:
    return c.mean_diff, c.mean_diff, 1.0 if c.mean_diff == 0 else 0.0
  p = 2 * (1 - statistics.NormalDist().cdf(abs(c.mean_diff) / se))
  return c.mean_diff - z * se, c.mean_diff + z * se, p
