"""The languages_v2 analysis (strategy x number of training languages) on synthetic runs whose
answer is known: per-query scores with planted slopes in log2 k, written as the run summaries
`hybrid_ir.experiments` saves, then read back by `hybrid_ir.report` alone."""
import json

import numpy as np
import pytest

from hybrid_ir import grids
from hybrid_ir import report
from hybrid_ir.data import lareqa as lareqa_data
from hybrid_ir.evaluators import stats

EVAL_LANGS = lareqa_data.LANGS["mlqa-r"]  # the XQuAD-R grid is evaluated on MLQA-R
PER_LANG = 40  # queries per evaluation language
COMMON = dict(model="e5-small", steps=300, batch=32, size="full")  # what the runner's flags give
MAP_METRICS = ("mo_map", "cr_map", "mul_map")


def _summary(run: grids.Run, values: np.ndarray, lang: np.ndarray) -> dict:
  """A run summary as `experiments.execute` writes it (report.summarize_run + the run's args),
  with `values` as the per-query scores of every mAP metric; rank distance falls as they rise."""
  per_query = {"lang": lang.tolist(), **{k: [round(float(v), 6) for v in values]
                                         for k in MAP_METRICS},
               "rank_distance": [int(round(1000 * (1 - v))) for v in values]}
  by_lang = {l: {k: float(np.mean(np.array(per_query[k], float)[lang == l]))
                 for k in (*MAP_METRICS, "rank_distance")} for l in EVAL_LANGS}
  metrics = {k: float(np.mean([by_lang[l][k] for l in EVAL_LANGS]))
             for k in (*MAP_METRICS, "rank_distance")}
  metrics.update(mo_r1=metrics["mo_map"], cr_r1=metrics["cr_map"], mul_r10=metrics["mul_map"])
  args = {**COMMON, **run.args}
  config = ",".join(f"{k}={v}" for k, v in args.items())
  return {"model": "e5-small", "tag": f"step_{args['steps']}", "uncovered_langs": [],
          "datasets": {"mlqa-r": {
              "dataset": "mlqa-r", "langs": list(EVAL_LANGS),
              "counts": {"num_questions": lang.size}, "metrics": metrics, "languages": by_lang,
              "matrix_map": [[by_lang[l]["mul_map"]] * len(EVAL_LANGS) for l in EVAL_LANGS],
              "per_query": per_query}},
          "loss_curve": [{"step": args["steps"], "train/loss": 0.1}], "parallel_curve": [],
          "run": run.name, "experiment": "languages_v2",
          "config": f"configs/experiments/base.py:{config}", "args": args,
          "wall_seconds": 60.0, "hardware": "synthetic"}


def _write_grid(directory, slopes: dict[str, float], *, run_sd=0.0, query_sd=0.0, seen_bonus=0.0,
                long_bonus=0.0, set_sd=0.0, seed=0, skip=()) -> dict[str, grids.Run]:
  """Writes every XQuAD-R run of the grid (except `skip`): each query's score is a shared base
  + slopes[strategy] * log2 k + a run offset N(0, run_sd) + query noise N(0, query_sd)
  + seen_bonus on query languages the run trained on + long_bonus for the longer-budget run
  + an offset N(0, set_sd) of the run's language set and seed, the same under every strategy."""
  rng = np.random.default_rng(seed)
  set_rng, set_offset = np.random.default_rng(seed + 1000), {}
  lang = np.repeat(np.array(EVAL_LANGS), PER_LANG)
  base = rng.uniform(0.3, 0.5, lang.size)
  directory.mkdir(parents=True, exist_ok=True)
  written = {}
  for run in grids.runs("languages_v2", ("xquad-r",)):
    strategy = report._strategy_of(run.name, run.args)
    langs = run.args["langs"].split("+")
    values = (base + slopes[strategy] * np.log2(len(langs)) + rng.normal(0, run_sd)
              + rng.normal(0, query_sd, lang.size) + seen_bonus * np.isin(lang, langs)
              + (long_bonus if "steps" in run.args else 0.0))
    if set_sd:
      block = (run.args["langs"], run.args.get("seed", 0))
      values = values + set_offset.setdefault(block, set_rng.normal(0, set_sd))
    if run.name in skip:
      continue
    (directory / f"{run.name}.json").write_text(json.dumps(_summary(run, values, lang)))
    written[run.name] = run
  return written


def _analysis(directory, n_resamples=1000):
  return report.scaling_analysis(report.load_runs(directory), "mlqa-r", n_resamples)


def test_ols_slope_weights_give_the_least_squares_slope():
  x = np.log2([2, 4, 7, 11])
  y = np.array([0.40, 0.43, 0.47, 0.48])
  assert stats.ols_slope_weights(x) @ y == pytest.approx(np.polyfit(x, y, 1)[0])
  with pytest.raises(ValueError, match="two distinct x"):
    stats.ols_slope_weights([1.0, 1.0])


def test_contrast_bootstrap_of_two_cells_is_the_seed_bootstrap():
  # hybrid - mono over seeds: the two-cell contrast is seed_bootstrap's difference.
  rng = np.random.default_rng(0)
  strata = np.repeat(np.arange(5), 300)
  a = 0.5 + rng.normal(0, 0.02, (3, 1)) + rng.normal(0, 0.2, (3, strata.size))
  b = 0.48 + rng.normal(0, 0.02, (2, 1)) + rng.normal(0, 0.2, (2, strata.size))
  ref = stats.seed_bootstrap(a, b, strata=strata, n_resamples=4000)
  got = stats.contrast_bootstrap([a, b], [[1.0, -1.0]], strata=strata, n_resamples=4000)
  assert got.estimate[0] == pytest.approx(ref.mean)
  assert got.ci_low[0] == pytest.approx(ref.ci_low, abs=0.004)
  assert got.ci_high[0] == pytest.approx(ref.ci_high, abs=0.004)
  assert got.run_values[0] == pytest.approx(ref.seed_means)
  # A run's value over a subset of strata: the macro average over those only.
  sub = stats.contrast_bootstrap([a], [[1.0]], strata=strata, run_strata=[[{0, 1}] * 3],
                                 n_resamples=10)
  assert sub.run_values[0][0] == pytest.approx((a[0, :300].mean() + a[0, 300:600].mean()) / 2)
  with pytest.raises(ValueError, match="cell 0 run 1: none of its strata"):
    stats.contrast_bootstrap([a], [[1.0]], strata=strata, run_strata=[[{0}, {9}, {0}]])
  with pytest.raises(ValueError, match="2 columns for 1 cells"):
    stats.contrast_bootstrap([a], [[1.0, -1.0]], strata=strata)


def test_contrast_bootstrap_blocks_cancel_an_effect_the_cells_share():
  # Two strategies on the same two language sets: a set moves every run on it by +-.1 and the
  # strategies differ by .05. Blocked, the difference is .05 however the sets are drawn.
  rng = np.random.default_rng(0)
  strata = np.repeat(np.arange(3), 100)
  base = rng.uniform(0.3, 0.5, strata.size)
  sets = np.array([[-0.1], [0.1]])
  a, b = base + 0.05 + sets, base + sets
  blocked = stats.contrast_bootstrap([a, b[::-1]], [[1.0, -1.0]], strata=strata,
                                     run_blocks=[["set0", "set1"], ["set1", "set0"]],
                                     n_resamples=2000)
  assert blocked.estimate[0] == pytest.approx(0.05)
  assert blocked.ci_high[0] - blocked.ci_low[0] == pytest.approx(0, abs=1e-9)
  unblocked = stats.contrast_bootstrap([a, b], [[1.0, -1.0]], strata=strata, n_resamples=2000)
  assert unblocked.ci_low[0] < -0.1 and unblocked.ci_high[0] > 0.2
  # Cells with other labels (or none) draw on their own.
  mixed = stats.contrast_bootstrap([a, b], [[1.0, -1.0]], strata=strata,
                                   run_blocks=[["set0", "set1"], ["set2", "set3"]],
                                   n_resamples=2000)
  assert mixed.ci_low[0] < -0.1
  with pytest.raises(ValueError, match="cell 0: run_blocks needs one distinct label per run"):
    stats.contrast_bootstrap([a, b], [[1.0, -1.0]], strata=strata,
                             run_blocks=[["set0", "set0"], None])


def test_noiseless_planted_slopes_are_recovered_exactly(tmp_path):
  # Every run is the shared base + slope x log2 k: the slopes and their differences are exact
  # and no resample of queries or runs can move them (each contrast's weights sum to 0).
  _write_grid(tmp_path, {"mono": 0.01, "cross": 0.02, "hybrid": 0.035})
  a = _analysis(tmp_path, n_resamples=200)
  assert a.budget == (300, 32)
  assert {key: len(names) for key, names in a.cells.items()} == {
      (s, k): 2 for s in grids.STRATEGIES for k in (2, 4, 7, 11)}
  for metric in MAP_METRICS:
    for s, slope in (("mono", 0.01), ("cross", 0.02), ("hybrid", 0.035)):
      e, ks = a.slopes[(metric, s)]
      assert ks == (2, 4, 7, 11)
      assert e.value == pytest.approx(slope, abs=1e-5)
      assert e.high - e.low == pytest.approx(0, abs=1e-5)
    assert a.slope_differences[(metric, ("hybrid", "mono"))][0].value == pytest.approx(0.025,
                                                                                      abs=1e-5)
    assert a.slope_differences[(metric, ("hybrid", "cross"))][0].value == pytest.approx(0.015,
                                                                                       abs=1e-5)
  # At k = 4 hybrid leads X-X-mono by (.035 - .01) x 2.
  assert a.edges[("mo_map", (4, "mono"))].value == pytest.approx(0.05, abs=1e-5)


def test_planted_slope_difference_is_recovered_inside_its_ci_under_run_and_query_noise(tmp_path):
  # Language sets / seeds move a whole run by N(0, .005); queries add N(0, .1) noise. Hybrid
  # rises .03 per doubling of k, X-X-mono .01 and X-Y .025.
  _write_grid(tmp_path, {"mono": 0.01, "cross": 0.025, "hybrid": 0.03}, run_sd=0.005,
              query_sd=0.1)
  a = _analysis(tmp_path)
  for metric in MAP_METRICS:
    for s, slope in (("mono", 0.01), ("cross", 0.025), ("hybrid", 0.03)):
      e = a.slopes[(metric, s)][0]
      assert e.low < slope < e.high, (metric, s, e)
    e = a.slope_differences[(metric, ("hybrid", "mono"))][0]
    assert e.low < 0.02 < e.high and e.low > 0 and e.p < 0.01, (metric, e)
    e = a.slope_differences[(metric, ("hybrid", "cross"))][0]
    assert e.low < 0.005 < e.high, (metric, e)
  # Rank distance falls as the scores rise: hybrid's falls faster, its edge grows.
  e = a.slope_differences[("rank_distance", ("hybrid", "mono"))][0]
  assert e.high < 0
  assert "hybrid's edge over X-X-mono grows with k" in report._verdict(e, "rank_distance", "mono")


def test_null_case_equal_slopes_ci_covers_zero_and_the_run_level_widens_it(tmp_path):
  _write_grid(tmp_path, {"mono": 0.02, "cross": 0.02, "hybrid": 0.02}, run_sd=0.01,
              query_sd=0.1, seed=1)
  a = _analysis(tmp_path)
  for metric in MAP_METRICS:
    for pair in report.SLOPE_DIFFERENCES:
      e = a.slope_differences[(metric, pair)][0]
      assert e.low < 0 < e.high and e.p > 0.05, (metric, pair, e)
      assert "no change of hybrid's edge" in report._verdict(e, metric, pair[1])
  # Runs that differ by N(0, .03) as a whole against the same runs without those offsets (query
  # noise only): the run level (language sets, seeds) widens the CI.
  widths = []
  for run_sd in (0.03, 0.0):
    _write_grid(tmp_path / f"run_sd{run_sd}", {"mono": 0.02, "cross": 0.02, "hybrid": 0.02},
                run_sd=run_sd, query_sd=0.05, seed=2)
    e = _analysis(tmp_path / f"run_sd{run_sd}").slope_differences[("mul_map", ("hybrid", "mono"))]
    widths.append(e[0].high - e[0].low)
  assert widths[1] < 0.5 * widths[0]


def test_language_set_effects_cancel_in_the_interaction_but_widen_each_slope(tmp_path):
  # Which languages a set holds moves its runs by N(0, .03) under every strategy. The runs are
  # blocked by set, so the slope differences keep the width they have without set effects,
  # while each strategy's own slope (no partner to cancel against) widens.
  slopes = {"mono": 0.01, "cross": 0.02, "hybrid": 0.03}
  width = {}
  for set_sd in (0.03, 0.0):
    _write_grid(tmp_path / f"set_sd{set_sd}", slopes, set_sd=set_sd, query_sd=0.05, seed=3)
    a = _analysis(tmp_path / f"set_sd{set_sd}")
    diff = a.slope_differences[("mul_map", ("hybrid", "mono"))][0]
    assert diff.low < 0.02 < diff.high, (set_sd, diff)
    own = a.slopes[("mul_map", "hybrid")][0]
    width[set_sd] = (diff.high - diff.low, own.high - own.low)
  assert width[0.03][0] == pytest.approx(width[0.0][0], rel=0.25)
  assert width[0.03][1] > 2 * width[0.0][1]


def test_seen_and_unseen_query_languages_and_the_longer_budget_run(tmp_path):
  # Queries in a language the run trained on score +.1; the longer run scores +.05 over its cell.
  _write_grid(tmp_path, {"mono": 0.0, "cross": 0.0, "hybrid": 0.0}, seen_bonus=0.1,
              long_bonus=0.05)
  a = _analysis(tmp_path, n_resamples=200)
  for s in grids.STRATEGIES:
    for k in (2, 4, 7):
      seen, unseen = a.seen[("mul_map", (s, k))], a.unseen[("mul_map", (s, k))]
      assert seen.value - unseen.value == pytest.approx(0.1, abs=0.03), (s, k)
    # Every MLQA-R language is among XQuAD-R's 11: nothing is unseen at k = 11.
    assert ("mul_map", (s, 11)) not in a.unseen and ("mul_map", (s, 11)) in a.seen
  assert list(a.check_cells) == ["xquad-r-hybrid-k11-steps600"]
  check = a.budget_checks[("xquad-r-hybrid-k11-steps600", "mo_map")]
  assert check.value == pytest.approx(0.05, abs=1e-5)
  assert ("hybrid", 11) in a.cells and "xquad-r-hybrid-k11-steps600" not in a.cells[("hybrid", 11)]


def test_report_from_saved_runs_has_every_cell_the_interaction_and_the_plot(tmp_path, capsys):
  grid = _write_grid(tmp_path / "languages_v2", {"mono": 0.01, "cross": 0.02, "hybrid": 0.03},
                     run_sd=0.005, query_sd=0.05)
  report.main(["report", "languages_v2", "--results", str(tmp_path)])
  text = capsys.readouterr().out
  assert text == (tmp_path / "languages_v2" / "report.md").read_text() + "\n"
  assert (tmp_path / "languages_v2" / "scaling_mlqa-r.png").stat().st_size > 0
  assert "![mAP and rank distance against k](scaling_mlqa-r.png)" in text
  assert "Partial grid" not in text
  for name in grid:
    assert f"| {name} |" in text
  cells = text.split("### Every cell")[1].split("###")[0]
  rows = [l.split("|")[1:4] for l in cells.splitlines()
          if l.startswith("| ") and "strategy" not in l]
  assert [(s.strip(), int(k), int(n)) for s, k, n in rows] == [
      (report.STRATEGY_NAMES[s], k, 2) for s in grids.STRATEGIES for k in (2, 4, 7, 11)]
  slopes = text.split("### The interaction")[1]
  mul = next(l for l in slopes.splitlines() if l.startswith("| Mul mAP |"))
  assert mul.count(" p=") == 5  # three slopes, two differences
  assert "- Mul mAP, hybrid − X-X-mono: +0.020 [" in slopes
  assert "xquad-r-hybrid-k11-steps600" in text.split("### Budget check")[1]
  with pytest.raises(SystemExit, match="--seed_sd_from is not used by languages_v2"):
    report.main(["report", "languages_v2", "--results", str(tmp_path), "--seed_sd_from", "x/y"])


def test_partial_grid_reports_what_exists_and_says_what_is_missing(tmp_path):
  # Interrupted after the first phase (k = 2 and 11, set 0 / seed 0), minus X-Y at k = 11.
  first = [r.name for r in grids.runs("languages_v2", ("xquad-r",))][:6]
  skip = {r.name for r in grids.runs("languages_v2", ("xquad-r",))} - set(first)
  skip.add("xquad-r-cross-k11")
  _write_grid(tmp_path, {"mono": 0.01, "cross": 0.02, "hybrid": 0.03}, skip=skip)
  # An untrained model's summary (no loss curve) in the folder is no cell of the grid.
  untrained = json.loads((tmp_path / "xquad-r-hybrid-k11.json").read_text())
  (tmp_path / "pretrained.json").write_text(json.dumps(dict(untrained, run="pretrained",
                                                            loss_curve=[])))
  a = _analysis(tmp_path, n_resamples=200)
  assert set(a.cells) == {("mono", 2), ("mono", 11), ("cross", 2), ("hybrid", 2), ("hybrid", 11)}
  assert a.slopes[("mul_map", "hybrid")][0].value == pytest.approx(0.03, abs=1e-5)
  assert a.slopes[("mul_map", "hybrid")][1] == (2, 11)
  assert ("mul_map", "cross") not in a.slopes
  assert ("mul_map", ("hybrid", "cross")) not in a.slope_differences
  assert a.slope_differences[("mul_map", ("hybrid", "mono"))][0].value == pytest.approx(0.02,
                                                                                       abs=1e-5)
  notes = " ".join(a.notes)
  assert "Partial grid: 20 of the 25 runs" in notes and "xquad-r-cross-k11," in notes
  assert "X-Y: 1 value(s) of k (2); no slope." in notes
  assert "hybrid − X-Y: 1 shared value(s) of k; no slope difference." in notes
  assert "One run only" in notes
  text = report.write_report("languages_v2", tmp_path)
  assert "- Partial grid: 20 of the 25 runs" in text
  line = next(l for l in text.splitlines() if l.startswith("| Mul mAP |"))
  cells = [c.strip() for c in line.split("|")[2:-1]]  # X-X-mono, X-Y, hybrid, the differences
  assert cells[1] == "—" and cells[4] == "—"
  assert cells[0].startswith("+0.010 [") and cells[0].endswith("(k=2,11)")
  assert "At k=" not in notes  # every strategy there holds the same runs


def test_strategies_holding_different_language_sets_at_one_k_are_named(tmp_path):
  # The first phase, then X-X-mono's second set at k = 2 before the other strategies' land.
  names = [r.name for r in grids.runs("languages_v2", ("xquad-r",))]
  skip = set(names) - set(names[:6]) - {"xquad-r-mono-k2-set1"}
  _write_grid(tmp_path, {"mono": 0.01, "cross": 0.02, "hybrid": 0.03}, skip=skip)
  notes = " ".join(_analysis(tmp_path, n_resamples=10).notes)
  sets = [l for l in grids.runs("languages_v2", ("xquad-r",)) if "-k2-" in l.name]
  set0, set1 = sets[0].args["langs"], sets[-1].args["langs"]
  assert (f"At k=2 the strategies hold different runs (X-X-mono: {set0}, {set1}; X-Y: {set0}; "
          f"hybrid: {set0})") in notes
  assert "At k=11" not in notes


def test_runs_evaluated_on_other_queries_are_named_not_paired(tmp_path):
  _write_grid(tmp_path, {"mono": 0.0, "cross": 0.0, "hybrid": 0.0},
              skip={r.name for r in grids.runs("languages_v2", ("xquad-r",))[2:]})
  path = tmp_path / "xquad-r-cross-k2-set0.json"
  summary = json.loads(path.read_text())
  pq = summary["datasets"]["mlqa-r"]["per_query"]
  pq["lang"] = pq["lang"][::-1]
  path.write_text(json.dumps(summary))
  with pytest.raises(ValueError, match="runs xquad-r-cross-k2-set0 and xquad-r-mono-k2-set0 hold "
                                       "different mlqa-r queries"):
    _analysis(tmp_path, n_resamples=10)


# The methods grid's planted effects on every query's score (mAP metrics; rank distance falls as
# they rise): per method, then what the selected checkpoint and LSAR add.
METHOD_EFFECT = {"pretrained": -0.20, "hybrid": 0.0, "hybrid-distill": 0.10, "mono-distill": 0.05,
                 "distill": -0.05}
SELECTED_EFFECT, LSAR_EFFECT = {"hybrid-distill": 0.02}, 0.03


def _write_methods(directory, *, run_sd=0.005, seed=0) -> dict[str, dict]:
  """Writes the XQuAD-R runs of the methods grid as the runner saves them: the last step's
  results, `best` (the selected step's), `lsar` (both again with LSAR), `selection` and the
  distilled runs' `distill_curve`; returns {run name: {variant: per-query values}}."""
  rng = np.random.default_rng(seed)
  lang = np.repeat(np.array(EVAL_LANGS), PER_LANG)
  base = rng.uniform(0.35, 0.45, lang.size)
  directory.mkdir(parents=True, exist_ok=True)
  planted = {}
  for run in grids.runs("methods", ("xquad-r",)):
    method = grids.seed_of(run.name)[0].removeprefix("xquad-r-")
    last = base + METHOD_EFFECT[method] + rng.normal(0, run_sd)
    values = {("last", False): last, ("selected", False): last + SELECTED_EFFECT.get(method, 0),
              ("last", True): last + LSAR_EFFECT,
              ("selected", True): last + SELECTED_EFFECT.get(method, 0) + LSAR_EFFECT}
    summary = _summary(run, values["last", False], lang)
    part = lambda key: _summary(run, values[key], lang)["datasets"]
    summary["lsar"] = {"rank": 4, "source": "xquad-r", "tag": summary["tag"],
                       "datasets": part(("last", True))}
    if run.pretrained:
      summary.update(loss_curve=[], tag="pretrained")
    else:
      summary["selection"] = {"metric": "validation/loss", "mode": "min", "step": 120,
                              "value": 0.5, "last_step": 300, "curve": [[120, 0.5], [300, 0.6]]}
      summary["best"] = {"tag": "step_120", "datasets": part(("selected", False))}
      summary["lsar"]["best"] = {"tag": "step_120", "datasets": part(("selected", True))}
    if run.args.get("distill"):
      kinds = ("mono",) if method == "mono-distill" else ("mono", "cross")
      summary["distill_curve"] = [{"step": s, "train/distill_mse": 0.5 / s,
                                   **{f"train/distill_mse_{k}": 0.5 / s for k in kinds}}
                                  for s in range(1, 11)]
    (directory / f"{run.name}.json").write_text(json.dumps(summary))
    planted[run.name] = values
  return planted


def _row(text: str, start: str) -> list[str]:
  line = next(l for l in text.splitlines() if l.startswith(start))
  return [c.strip() for c in line.split("|")[1:-1]]


def test_methods_report_pairs_every_cell_with_hybrid_over_seeds_and_picks_the_best(tmp_path):
  directory = tmp_path / "methods"
  planted = _write_methods(directory)
  text = report.write_report("methods", directory)
  lang = np.repeat(np.array(EVAL_LANGS), PER_LANG)
  # Every method x checkpoint x LSAR cell, seeds pooled; the untrained model once per LSAR.
  table = text.split("Against **hybrid, last**")[0]
  for method in ("hybrid", "hybrid-distill", "mono-distill", "distill"):
    for checkpoint in ("last", "selected"):
      for lsar in ("no", "yes"):
        row = _row(table, f"| {method} | {checkpoint} | {lsar} |")
        assert row[3:5] == ["3", "120,120,120" if checkpoint == "selected" else "300,300,300"]
  assert _row(table, "| pretrained | untrained | no |")[3] == "1"
  assert _row(table, "| pretrained | untrained | yes |")[3] == "1"
  # The paired difference across seeds and queries is the two-level bootstrap of the planted
  # values: hybrid + distillation, last step, against hybrid, last step (+.10 planted).
  names = lambda m: [f"xquad-r-{m}"] + [f"xquad-r-{m}-seed{s}" for s in (1, 2)]
  a = np.stack([planted[n]["last", False] for n in names("hybrid-distill")])
  b = np.stack([planted[n]["last", False] for n in names("hybrid")])
  r = stats.seed_bootstrap(a, b, strata=lang, n_resamples=report.N_RESAMPLES)
  paired = text.split("Against **hybrid, last**")[1].split("What each ingredient adds")[0]
  cell = _row(paired, "| hybrid-distill | last | no |")[5]  # Δ Mul mAP
  assert cell == f"{r.mean:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] p={r.p_value:.3g}"
  assert r.ci_low < 0.10 < r.ci_high and r.ci_low > 0.05
  # The same run's LSAR and selected cells carry the planted extras.
  for start, effect in (("| hybrid-distill | selected | no |", .12),
                        ("| hybrid-distill | last | yes |", .13),
                        ("| distill | last | no |", -.05)):
    delta = float(_row(paired, start)[5].split()[0])
    assert delta == pytest.approx(effect, abs=0.02), start
  # The questions: hybrid batching adds +.05 over X-X-mono once both are distilled.
  questions = text.split("What each ingredient adds")[1]
  row = _row(questions, "| hybrid batches vs X-X-mono, both distilled |")
  assert row[1] == "hybrid-distill, last − mono-distill, last"
  assert float(row[4].split()[0]) == pytest.approx(0.05, abs=0.02)
  assert "| LSAR on top of hybrid |" in questions
  # Headline: the best cell by mean Mul mAP (hybrid + distillation, selected, with LSAR: +.15),
  # against the targets (MLQA-R Mul >= .52 met at ~.55; Mo >= .66 and rank distance not).
  head = text.split("Every method on mlqa-r")[0]
  best = _row(head, "| best: hybrid-distill, selected, LSAR |")
  mul = np.mean([report.stats.macro_mean(planted[n]["selected", True], lang)
                 for n in names("hybrid-distill")])
  assert best[3] == f"{mul:.3f} ✓" and best[1].endswith("✗") and best[4].endswith("✗")
  assert best[5] == "3"
  assert _row(head, "| paper, XLM-R hybrid |")[1:5] == ["0.648", "0.623", "0.512", "227.0"]
  assert _row(head, "| recipe: hybrid, last |")[3].endswith("✗")
  # The distillation term per batch type, from the summaries alone.
  assert "Mean distillation term" in text
  # Ten log windows of 0.5 / step: the first fifth is steps 1-2, the last fifth steps 9-10.
  first, final = np.mean([0.5, 0.25]), np.mean([0.5 / 9, 0.05])
  assert _row(text, "| xquad-r-mono-distill |")[1:] == [f"{first:.3f} → {final:.3f}", "—"]
  assert _row(text, "| xquad-r-hybrid-distill-seed2 |")[2] == f"{first:.3f} → {final:.3f}"
  assert (directory / "distill_mlqa-r.png").stat().st_size > 0


def test_ratio_report_shows_the_distillation_term_per_alpha(tmp_path):
  # The α sweep run with --set distill=<weight>: each α's MSE term per batch type, from the
  # summaries alone, beside its final accuracy. Planted: the term falls faster the more X-Y
  # batches (cross) a run draws.
  rng = np.random.default_rng(0)
  lang = np.repeat(np.array(EVAL_LANGS), PER_LANG)
  directory = tmp_path / "ratio"
  directory.mkdir()
  for run in grids.runs("ratio"):
    summary = _summary(run, rng.uniform(0.3, 0.5, lang.size), lang)
    if run.pretrained:
      summary["loss_curve"] = []
    else:
      summary["args"]["distill"] = 1.0
      rate = 0.1 + run.args["cross"]
      kinds = [k for k in ("mono", "cross", "mixed") if run.args[k] > 0]
      summary["distill_curve"] = [{"step": s, **{f"train/distill_mse_{k}": 0.5 * np.exp(-rate * s)
                                                 for k in kinds}} for s in range(1, 11)]
      summary["loss_curve"] = [{"step": s, "train/loss": 1.0, **{f"train/loss_{k}": 1.0
                                                                for k in kinds}}
                               for s in range(1, 11)]
    (directory / f"{run.name}.json").write_text(json.dumps(summary))
  text = report.write_report("ratio", directory)
  mse = text.split("Mean distillation term")[1].split("![")[0]
  assert "| run | mono batches | cross batches | mixed batches |" in mse
  for name, cross in (("alpha0", 1.0), ("alpha1", 0.0)):
    curve = 0.5 * np.exp(-(0.1 + cross) * np.arange(1, 11))
    cell = f"{curve[:2].mean():.3f} → {curve[-2:].mean():.3f}"
    row = _row(mse, f"| {name} |")
    assert row[1 if name == "alpha1" else 2] == cell and row[2 if name == "alpha1" else 1] == "—"
  assert "| pretrained |" not in mse
  # The loss table names what train/loss is with the term on: not InfoNCE alone.
  assert ("Mean training loss (InfoNCE + the weighted distillation term) per batch type" in text
          and "Mean InfoNCE loss" not in text)
  assert (directory / "distill_mlqa-r.png").stat().st_size > 0
  assert (directory / "alpha_mlqa-r.png").stat().st_size > 0  # the final accuracy per alpha


def test_lsar_report_pairs_each_rank_with_the_plain_model_and_shows_what_it_removes(tmp_path):
  # Planted: the plain model's per-query scores, and each rank's scores a known shift above them.
  rng = np.random.default_rng(0)
  lang = np.repeat(np.array(EVAL_LANGS), PER_LANG)
  plain = rng.uniform(0.3, 0.5, lang.size)
  directory = tmp_path / "lsar"
  directory.mkdir()
  singular_values = [3.0, 2.0, 1.5, 1.0, 1.0, 0.8, 0.5, 0.5, 0.3, 0.2, 0.0]
  shifts = {1: 0.02, 2: 0.04, 4: 0.06, 7: 0.05, 10: -0.01}
  for run in grids.runs("lsar", ("xquad-r",)):
    rank = run.args["lsar"]
    summary = _summary(run, plain, lang)
    removed = _summary(run, plain + shifts[rank], lang)
    summary["lsar"] = {"rank": rank, "source": "xquad-r", "tag": "pretrained",
                       "datasets": removed["datasets"],
                       "subspace": {"langs": list(lareqa_data.LANGS["xquad-r"]),
                                    "counts": [10] * 11, "singular_values": singular_values}}
    (directory / f"{run.name}.json").write_text(json.dumps(summary))
  text = report.write_report("lsar", directory)
  paired = text.split("Paired against **rank 0 (plain)**")[1].split("Share of the spread")[0]
  for rank, shift in shifts.items():
    row = _row(paired, f"| rank {rank} |")
    assert float(row[3].split()[0]) == pytest.approx(shift, abs=1e-3)  # Δ Mul mAP
  sq = np.square(singular_values)
  for rank in shifts:
    assert _row(text, f"| {rank} | ")[1] == f"{sq[:rank].sum() / sq.sum():.3f}"
  assert (directory / "lsar_mlqa-r.png").stat().st_size > 0
  # A summary without LSAR results is not an lsar run.
  (directory / "stray.json").write_text(json.dumps(_summary(grids.Run("stray", {}), plain, lang)))
  with pytest.raises(ValueError, match=r"runs \['stray'\] have no LSAR results"):
    report.write_report("lsar", directory)
