"""Paired significance for two runs' per-query values: bootstrap CI and randomisation test.

Inputs are aligned per-query vectors (e.g. `LareqaResult.per_query('mul_map')` of two runs on the
same dataset): element i of both arrays is the same query (or query x language unit).

  paired_bootstrap(a, b): resamples queries with replacement and returns the mean difference
    mean(a - b) with a percentile 95% CI. Recommended for reporting "how big is the gain".
  paired_randomization(a, b): the sign-flip (approximate permutation) test of H0 "a and b are
    exchangeable per query", two-sided on |mean(a - b)|. Recommended for "is the gain real"
    (Smucker et al. 2007 found it the most reliable IR test). The p-value counts the observed
    assignment, p = (1 + #{|d*| >= |d|}) / (1 + n_resamples), so it is never 0.
  seed_bootstrap(a, b): the two-level (training seeds, then queries) CI and p of a mean or a
    difference of two configurations trained on several seeds.
  contrast_bootstrap(cells, contrasts): the same two levels for linear contrasts of many cells'
    means, e.g. slopes over the number of training languages (`ols_slope_weights`) per strategy
    and their differences.
All are seeded, vectorised numpy, and drop no value silently (NaNs raise).
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


@dataclasses.dataclass(frozen=True)
class ContrastResult:
  """Of linear contrasts of cell means (e.g. a slope over cells, or a difference of two slopes):
  per contrast its point value, two-level bootstrap CI and two-sided p-value of "contrast = 0";
  and per cell the value of each of its runs (their spread is the run-level variance)."""
  estimate: np.ndarray  # [K]
  ci_low: np.ndarray  # [K]
  ci_high: np.ndarray  # [K]
  p_value: np.ndarray  # [K]
  run_values: tuple[np.ndarray, ...]  # per cell: [R_c], each run's macro average


def ols_slope_weights(x) -> np.ndarray:
  """w such that w @ y is the ordinary least-squares slope of y on x (one y per x).

  Inputs: x [C] (e.g. log2 of the number of training languages of C cells), at least two distinct
  values. The slope is linear in y, so `contrast_bootstrap` gives its CI with `w` as a contrast
  row, and the difference of two slopes is the difference of two such rows."""
  x = np.asarray(x, np.float64)
  centred = x - x.mean()
  ss = float(centred @ centred)
  if x.ndim != 1 or ss == 0:
    raise ValueError(f"a slope needs at least two distinct x values; got {x.tolist()}")
  return centred / ss


def contrast_bootstrap(cells, contrasts, *, strata, run_strata=None, run_blocks=None,
                       n_resamples: int = 10_000, confidence: float = 0.95,
                       seed: int = 0) -> ContrastResult:
  """Two-level bootstrap (runs within each cell, then queries) of linear contrasts of cell means.

  Inputs: cells, C arrays [R_c, N]: per-query values of the R_c runs of cell c (e.g. the language
  sets or training seeds of one strategy at one number of training languages; column i = the same
  query everywhere); contrasts [K, C]; strata [N] (query language). A run's value is the macro
  average over strata of its per-query values; run_strata (optional), per cell per run, the strata
  labels that run's value averages over instead of all (e.g. only the query languages the run was
  trained on); a cell's mean is the mean of its runs' values. run_blocks (optional), per cell
  one label per run or None: cells whose runs carry the same labels (matched by value, not
  position) are a blocked design, e.g. the same language sets under every strategy at one k.
  Each resample draws one stratified resample of queries, shared by every run and cell (queries
  stay paired), and R_c of each cell's runs with replacement: one draw of labels serves every
  cell of a block, so an effect its runs share (which languages were trained on) cancels in
  contrasts between those cells; other cells draw independently (different runs). The query
  level is a multinomial count per query, so each resample costs one matrix product. p is two-sided: 2 x the share of resampled contrasts on the other side of 0
  (floor 1 / n_resamples), as in `seed_bootstrap`.
  Recommended for: how a metric changes with a cell variable across strategies (slopes with
  `ols_slope_weights`, their differences); `seed_bootstrap` is the two-cell case. A cell of one
  run has no run-level variance to resample: its CI covers queries only.
  """
  cells = [_seed_matrix(c, f"cell {i}") for i, c in enumerate(cells)]
  n = cells[0].shape[1]
  if any(c.shape[1] != n for c in cells):
    raise ValueError(f"cells cover different queries: {[c.shape[1] for c in cells]}")
  contrasts = np.atleast_2d(np.asarray(contrasts, np.float64))
  if contrasts.shape[1] != len(cells):
    raise ValueError(f"contrasts have {contrasts.shape[1]} columns for {len(cells)} cells")
  strata = np.asarray(strata)
  if strata.shape != (n,):
    raise ValueError(f"strata must have one label per query ({n}); got shape {strata.shape}")
  labels = np.unique(strata)
  groups = [np.flatnonzero(strata == s) for s in labels]
  x = np.concatenate(cells)  # [R, N], every run of every cell
  owner = np.repeat(np.arange(len(cells)), [c.shape[0] for c in cells])
  weights = np.zeros((x.shape[0], len(labels)))  # [R, G]: a run's weight on each stratum mean
  for r in range(x.shape[0]):
    c, i = owner[r], r - np.flatnonzero(owner == owner[r])[0]
    chosen = labels if run_strata is None else run_strata[c][i]
    mask = np.isin(labels, list(chosen))
    if not mask.any():
      raise ValueError(f"cell {c} run {i}: none of its strata {sorted(chosen)} are among the "
                       f"queries' {labels.tolist()}")
    weights[r, mask] = 1.0 / mask.sum()
  rng = np.random.default_rng(seed)
  stratum_means = np.stack([x[:, g].mean(1) for g in groups], 1)  # [R, G]
  run_values = (weights * stratum_means).sum(1)
  boot = np.zeros((x.shape[0], n_resamples))  # [R, B]: each run's value in each resample
  for j, g in enumerate(groups):
    counts = rng.multinomial(g.size, np.full(g.size, 1.0 / g.size), size=n_resamples)
    boot += weights[:, j:j + 1] * (x[:, g] @ counts.T) / g.size
  cell_boot = np.zeros((len(cells), n_resamples))
  point = np.zeros(len(cells))
  block_draws = {}  # a block's labels -> its draw of run positions [B, R], shared by its cells
  for c in range(len(cells)):
    rows = np.flatnonzero(owner == c)
    labels_c = None if run_blocks is None or run_blocks[c] is None else list(run_blocks[c])
    if labels_c is None:
      positions = rng.integers(0, rows.size, (n_resamples, rows.size))
    else:
      if len(labels_c) != rows.size or len(set(labels_c)) != rows.size:
        raise ValueError(f"cell {c}: run_blocks needs one distinct label per run "
                         f"({rows.size}); got {labels_c}")
      order = sorted(range(rows.size), key=lambda i: str(labels_c[i]))
      rows = rows[order]  # runs in label order, so position i is the same label in every cell
      key = tuple(sorted(map(str, labels_c)))
      if key not in block_draws:
        block_draws[key] = rng.integers(0, rows.size, (n_resamples, rows.size))
      positions = block_draws[key]
    draws = rows[positions]  # [B, R_c]
    cell_boot[c] = np.take_along_axis(boot.T, draws, axis=1).mean(1)
    point[c] = run_values[rows].mean()
  stat = contrasts @ cell_boot  # [K, B]
  estimate = contrasts @ point
  alpha = (1 - confidence) / 2
  low, high = np.quantile(stat, [alpha, 1 - alpha], axis=1)
  other_side = np.where(estimate > 0, (stat <= 0).mean(1), (stat >= 0).mean(1))
  p = np.clip(2 * other_side, 1.0 / n_resamples, 1.0)
  return ContrastResult(estimate=estimate, ci_low=low, ci_high=high, p_value=p,
                        run_values=tuple(run_values[owner == c] for c in range(len(cells))))
