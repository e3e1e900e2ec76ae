"""Runs -> markdown tables with 95% CIs and paired tests, and PNG plots.

  python -m hybrid_ir.report compare BEFORE.json AFTER.json   # two eval.py outputs or run summaries
  python -m hybrid_ir.report before-after WORKDIR             # untrained vs last step (the demo)
  python -m hybrid_ir.report <experiment> [--results DIR]     # DIR/<experiment>/*.json
  python -m hybrid_ir.report versus BEFORE_DIR AFTER_DIR       # the runs both hold, paired

<experiment> is one of hybrid_ir.grids.EXPERIMENTS (strategies, ratio, languages, ...); it writes
DIR/<experiment>/report.md and its PNGs from the run summaries there (`python -m
hybrid_ir.experiments` writes them) and prints the markdown. Without --results it reports every
results/<experiment>/ and results/*/<experiment>/ found under the current directory (the committed
ones: results/use_m3/, results/e5_small/).

Statistics. Each run keeps one value per query for Mo AP, Cr AP (weighted over the query's other
languages, see `hybrid_ir.evaluators.lareqa.query_vectors`), Mul AP and rank distance, such that
their macro average over query
languages is exactly the reported figure. A run's 95% CI is a bootstrap over queries, resampled
within each query language; a comparison with the baseline is paired by query: the same
stratified bootstrap of the difference, and a sign-flip randomisation p-value
(`hybrid_ir.evaluators.stats`). The query is the resampling unit because a query's settings
(X->Y for every Y) are not independent. Runs of several training seeds (`-seed<k>` names) are
also pooled: mean ± sd over seeds and a two-level bootstrap (seeds, then queries) CI and p-value,
`stats.seed_bootstrap`, so that a difference is judged against seed-to-seed variance too.
languages_v2 (strategy x number of training languages k) pools each cell's runs (language sets,
seeds) the same two-level way for the cell means, per-strategy slopes in log2 k and their
differences (`scaling_analysis`, `stats.contrast_bootstrap`). methods (hybrid, distillation,
LSAR; last and validation-selected checkpoints) pools each method's seeds per checkpoint and LSAR
variant and pairs every cell with the recipe (hybrid, last step) the same two-level way
(`methods_table`, `questions_table`), with a headline against the paper's targets.
lsar pairs the untrained model at each LSAR rank with its plain self, by query.
"""
import argparse
from collections.abc import Sequence
import dataclasses
import json
import pathlib
import sys

import numpy as np

from hybrid_ir import grids
from hybrid_ir import run_dir
from hybrid_ir.evaluators import lareqa
from hybrid_ir.evaluators import markdown_table
from hybrid_ir.evaluators import stats

METRICS = ("mo_map", "cr_map", "mul_map", "mo_r1", "cr_r1", "mul_r10", "rank_distance")
TESTED = ("mo_map", "cr_map", "mul_map", "rank_distance")  # those with per-query vectors
HEADERS = {"mo_map": "Mo mAP", "cr_map": "Cr mAP", "mul_map": "Mul mAP", "mo_r1": "Mo R@1",
           "cr_r1": "Cr R@1", "mul_r10": "Mul R@10", "rank_distance": "rank dist."}
# strategies: '<train set>-mono'; recipe: its first row (and each row vs the one before it)
BASELINES = {"ratio": "alpha1", "languages": "pretrained", "recipe": "recipe1-base",
             "ingredients": "base", "table": "table-dense"}
N_RESAMPLES = 2000


def _deltas(keys: Sequence[str]) -> list[str]:
  """Column headers of paired differences: 'Δ Mo mAP', ..."""
  return [f"Δ {HEADERS[k]}" for k in keys]


# ------------------------------------------------------------------------------------------------
# Run summaries (what results/ holds).
# ------------------------------------------------------------------------------------------------

# Per-query vectors of a LAReQA result's JSON: defined with the evaluator, where the metrics are.
per_query = lareqa.per_query_vectors


def lareqa_details(ev: dict) -> dict[str, dict]:
  """The LAReQA results of an eval.py output ({eval name: details}); others (e.g. MIRACL) have no
  Mo/Cr/Mul table. Outputs written before eval.py recorded `types` hold LAReQA results only."""
  kinds = ev.get("types") or {}
  return {name: d for name, d in ev["details"].items()
          if kinds.get(name, "lareqa") == "lareqa"}


def compact(details: dict) -> dict:
  """The small part of a LAReQA result worth keeping under results/ (no rank arrays)."""
  vectors = per_query(details)
  return {"dataset": details["dataset"], "langs": details["langs"], "counts": details["counts"],
          "metrics": details["metrics"], "languages": details["languages"],
          "matrix_map": details["matrix"]["map"],
          # 4 decimals keep any mean exact to 5e-5; rank distances are whole numbers.
          "per_query": {k: (v.tolist() if k == "lang" else
                            [None if np.isnan(x) else int(x) if k == "rank_distance"
                             else round(float(x), 4) for x in v])
                        for k, v in vectors.items()}}


def loss_curve(workdir: pathlib.Path) -> list[dict]:
  """Training loss (overall and per batch type) per logged step, from metrics.jsonl."""
  rows = run_dir.read_metrics(workdir)
  return [{k: v for k, v in r.items() if k == "step" or k.startswith("train/loss")} for r in rows
          if "train/loss" in r]


def parallel_curve(workdir: pathlib.Path) -> list[dict]:
  """The parallel-query distance measured during training ({'step', 'sq_dist'}; see
  hybrid_ir.evaluators.parallel), from metrics.jsonl; [] when the run measured none."""
  rows = run_dir.read_metrics(workdir)
  return [{"step": r["step"], "sq_dist": r["parallel/sq_dist"]} for r in rows
          if "parallel/sq_dist" in r]


def distill_curve(workdir: pathlib.Path) -> list[dict]:
  """The distillation term per logged step, overall and per batch type, with the InfoNCE part
  (`train/distill_mse`, `train/distill_mse_<type>`, `train/info_nce`; hybrid_ir.distill), from
  metrics.jsonl; [] when the run trained without it."""
  rows = run_dir.read_metrics(workdir)
  return [{k: v for k, v in r.items()
           if k == "step" or k.startswith("train/distill_mse") or k == "train/info_nce"}
          for r in rows if "train/distill_mse" in r]


def summarize_run(workdir: pathlib.Path, tag: str, eval_dir: str = "eval") -> dict:
  """The results/ summary of one evaluated run: compact results per dataset (of
  <workdir>/<eval_dir>/<tag>.json), loss, parallel-distance and distillation curves."""
  path = workdir / eval_dir / f"{tag}.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: no evaluation output (run hybrid_ir.eval first)")
  ev = json.loads(path.read_text())
  return {"model": ev["model"], "tag": tag, "uncovered_langs": ev.get("uncovered_langs", []),
          "datasets": {name: compact(d) for name, d in lareqa_details(ev).items()},
          "loss_curve": loss_curve(workdir), "parallel_curve": parallel_curve(workdir),
          "distill_curve": distill_curve(workdir)}


def _vectors(dataset_summary: dict) -> dict[str, np.ndarray]:
  pq = dataset_summary["per_query"]
  return {k: (np.array(v) if k == "lang" else np.array([np.nan if x is None else x for x in v]))
          for k, v in pq.items()}


# ------------------------------------------------------------------------------------------------
# Tables.
# ------------------------------------------------------------------------------------------------

def _ci(values: np.ndarray, langs: np.ndarray) -> tuple[float, float]:
  ok = ~np.isnan(values)
  _, low, high = stats.paired_bootstrap(values[ok], np.zeros(ok.sum()), strata=langs[ok],
                                        n_resamples=N_RESAMPLES)
  return low, high


def _paired(vec: dict, base: dict, k: str, where: np.ndarray | None = None,
            p_value: bool = True, seed_sd: float | None = None) -> str:
  """'Δ [95% CI] p=…' of metric `k`, run minus baseline, paired by query over the queries both
  have (and `where`); '—' when there are none. seed_sd: widen the CI and p by that training-seed
  sd (`stats.widen_by_seed_sd`)."""
  ok = ~(np.isnan(vec[k]) | np.isnan(base[k]))
  if where is not None:
    ok &= where
  if not ok.any():
    return "—"
  c = stats.compare(vec[k][ok], base[k][ok], strata=vec["lang"][ok], n_resamples=N_RESAMPLES)
  low, high, p = ((c.ci_low, c.ci_high, c.p_value) if seed_sd is None
                  else stats.widen_by_seed_sd(c, seed_sd))
  d = 1 if k == "rank_distance" else 3
  return f"{c.mean_diff:+.{d}f} [{low:+.{d}f}, {high:+.{d}f}]" + (f" p={p:.3g}" if p_value else "")


def comparison_table(runs: dict[str, dict], dataset: str, baseline: str | None) -> str:
  """Markdown: one row per run (value [95% CI]); then each run vs `baseline`, paired."""
  rows = []
  for name, run in runs.items():
    ds = run["datasets"][dataset]
    vec = _vectors(ds)
    cells = []
    for k in METRICS:
      cell = lareqa.format_metric(ds["metrics"][k], k)
      if k in TESTED and not np.all(np.isnan(vec[k])):
        low, high = _ci(vec[k], vec["lang"])
        cell += f" [{lareqa.format_metric(low, k)}, {lareqa.format_metric(high, k)}]"
      cells.append(cell)
    rows.append([name, *cells])
  lines = [markdown_table([f"run ({dataset})", *(HEADERS[k] for k in METRICS)], rows)]
  if baseline is None or baseline not in runs:
    return "\n".join(lines)
  base = _vectors(runs[baseline]["datasets"][dataset])
  lines += ["", f"Paired against **{baseline}** (difference of macro averages, 95% bootstrap CI, "
            f"sign-flip randomisation p; {N_RESAMPLES} resamples):", "",
            markdown_table([f"run ({dataset})", *_deltas(TESTED)],
                           [[name, *(_paired(_vectors(run["datasets"][dataset]), base, k)
                                     for k in TESTED)]
                            for name, run in runs.items() if name != baseline])]
  return "\n".join(lines)


def _seed_groups(runs: dict[str, dict]) -> dict[str, list[str]]:
  """Trained runs by their name without the seed suffix ('xquad-r-mono': [..., '-seed2'])."""
  out: dict[str, list[str]] = {}
  for name, run in runs.items():
    if run.get("loss_curve"):
      out.setdefault(grids.seed_of(name)[0], []).append(name)
  return out


def _seed_values(results: list[dict], k: str) -> tuple[np.ndarray, np.ndarray]:
  """[seeds, queries] values of metric k of one dataset's results (one per training seed, as
  run summaries hold them), and the query languages."""
  vecs = [_vectors(r) for r in results]
  return np.stack([v[k] for v in vecs]), vecs[0]["lang"]


def seed_cell(results: list[dict], k: str, base: list[dict] | None = None) -> str:
  """One table cell of metric k over training seeds (`stats.seed_bootstrap`, queries where every
  seed has a value): 'mean ± sd [95% CI]' of `results`, or with `base` (the baseline's seeds)
  'Δ [95% CI] p=…' of results minus base; '—' when no query has values in all of them.

  Inputs: one dataset's results per seed (a run summary's datasets[d], best.datasets[d] or
  lsar.datasets[d]); the queries of every entry are the same, in one order."""
  a, lang = _seed_values(results, k)
  b = None if base is None else _seed_values(base, k)[0]
  ok = ~np.isnan(a).any(0) & (np.ones(a.shape[1], bool) if b is None else ~np.isnan(b).any(0))
  if not ok.any():
    return "—"
  r = stats.seed_bootstrap(a[:, ok], None if b is None else b[:, ok], strata=lang[ok],
                           n_resamples=N_RESAMPLES)
  if b is None:
    return (f"{lareqa.format_metric(r.mean, k)} ± {lareqa.format_metric(r.seed_sd, k)} "
            f"[{lareqa.format_metric(r.ci_low, k)}, {lareqa.format_metric(r.ci_high, k)}]")
  d = 1 if k == "rank_distance" else 3
  return f"{r.mean:+.{d}f} [{r.ci_low:+.{d}f}, {r.ci_high:+.{d}f}] p={r.p_value:.3g}"


def seed_table(runs: dict[str, dict], dataset: str, baselines: Sequence[str] = (),
               groups: dict[str, list[str]] | None = None) -> str:
  """Across training seeds: per run (seeds pooled by name) mean ± sd over seeds with a 95% CI
  that covers seed and query variance (`stats.seed_bootstrap`), and each run vs each of
  `baselines` (strategies: X-X-mono, then X-Y, the paper's two claims for hybrid).
  groups: {name: its seeds' keys in runs}; default: the trained runs by name (`_seed_groups`)."""
  groups = _seed_groups(runs) if groups is None else groups

  def cells(names, base_names=None):
    results = [runs[n]["datasets"][dataset] for n in names]
    base = None if base_names is None else [runs[n]["datasets"][dataset] for n in base_names]
    return [seed_cell(results, k, base) for k in TESTED]

  seeds = {name: ",".join(map(str, sorted(grids.seed_of(n)[1] for n in names)))
           for name, names in groups.items()}
  lines = [f"Across training seeds ({dataset}): mean ± sd over seeds [95% CI over seeds and "
           f"queries, two-level bootstrap, {N_RESAMPLES} resamples]:", "",
           markdown_table(["run", "seeds", *(HEADERS[k] for k in TESTED)],
                          [[name, seeds[name], *cells(names)] for name, names in groups.items()])]
  for base in (grids.seed_of(b)[0] for b in baselines):
    if base not in groups:
      continue
    lines += ["", f"Against **{base}** across seeds (seeds resampled separately for each run, "
              "queries paired; two-sided bootstrap p):", "",
              markdown_table(["run", *_deltas(TESTED)],
                             [[name, *cells(names, groups[base])]
                              for name, names in groups.items() if name != base])]
  return "\n".join(lines)


def ablation_table(runs: dict[str, dict], dataset: str) -> str:
  """The recipe's ablation: each trained run paired against the row before it (what its one
  ingredient changed), with its wall time."""
  # recipe1-..., recipe2-...: sorted is the grid's order; seed 0 (other seeds: seed_table).
  pairs = _one_seed_pairs({n: r for n, r in runs.items() if dataset in r["datasets"]}, "recipe",
                          None)
  rows = []
  for name, prev in pairs:
    vec = _vectors(runs[name]["datasets"][dataset])
    base = _vectors(runs[prev]["datasets"][dataset])
    minutes = (runs[name].get("wall_seconds") or float("nan")) / 60
    rows.append([f"{name} (vs {prev})", *(_paired(vec, base, k) for k in TESTED),
                 f"{minutes:.0f} min"])
  return "\n".join([f"Each ingredient against the row before it ({dataset}; paired by query, "
                    f"95% CI, randomisation p; {N_RESAMPLES} resamples):", "",
                    markdown_table(["run", *_deltas(TESTED), "wall time"], rows)])


def seed_sd_of(source: str, dataset: str) -> tuple[dict[str, float], int]:
  """The sd over training seeds of each tested metric's macro value on `dataset`, of the runs
  `<dir>/<name>.json`, `<dir>/<name>-seed<k>.json` named by `source` = '<dir>/<name>' (e.g.
  results/e5_small/strategies/xquad-r-hybrid), and their number of seeds."""
  directory, name = pathlib.Path(source).parent, pathlib.Path(source).name
  runs = load_runs(directory)
  names = [n for n in runs if grids.seed_of(n)[0] == name]
  if len(names) < 2:
    raise ValueError(f"--seed_sd_from {source}: {len(names)} seed(s) of run {name!r} in "
                     f"{directory}; need 2 or more (experiments --seeds 0,1,2)")
  missing = [n for n in names if dataset not in runs[n]["datasets"]]
  if missing:
    raise ValueError(f"--seed_sd_from {source}: {missing} were not evaluated on {dataset}")
  return ({k: float(np.std([runs[n]["datasets"][dataset]["metrics"][k] for n in names], ddof=1))
           for k in TESTED}, len(names))


def seed_widened_table(runs: dict[str, dict], dataset: str, pairs: Sequence[tuple[str, str]],
                       source: str) -> str:
  """One-seed comparisons (run, baseline) with CIs and p widened by the seed sd of `source`
  (`seed_sd_of`, `stats.widen_by_seed_sd`): what an ablation or sweep row shows once training
  seeds are allowed to differ as much as the source's seeds did."""
  sd, n_seeds = seed_sd_of(source, dataset)
  lines = [f"One seed per run; 95% CIs and p widened by the training-seed sd of `{source}` "
           f"({n_seeds} seeds: " + ", ".join(f"{HEADERS[k]} {lareqa.format_metric(sd[k], k)}" for k in TESTED)
           + "; Var = Var over queries + 2 sd², normal approximation):", ""]
  rows = []
  for name, base in pairs:
    vec, ref = _vectors(runs[name]["datasets"][dataset]), _vectors(runs[base]["datasets"][dataset])
    rows.append([f"{name} (vs {base})", *(_paired(vec, ref, k, seed_sd=sd[k]) for k in TESTED)])
  return "\n".join([*lines, markdown_table(["run", *_deltas(TESTED)], rows)])


def _one_seed_pairs(group: dict[str, dict], experiment: str, baseline: str | None
                    ) -> list[tuple[str, str]]:
  """The comparisons a one-seed table makes: the recipe's rows each against the row before,
  every other trained seed-0 run against the experiment's baseline."""
  trained = [n for n, r in group.items() if r.get("loss_curve") and not grids.seed_of(n)[1]]
  if experiment == "recipe":
    trained = sorted(trained)
    return list(zip(trained[1:], trained))
  return [(n, baseline) for n in trained if baseline in group and n != baseline]


def versus_table(before: dict[str, dict], after: dict[str, dict], dataset: str) -> str:
  """The runs two result folders share (e.g. before and after a fix): each metric's value
  before -> after and the paired difference after - before, with CI and p."""
  names = [n for n in after if n in before and after[n].get("loss_curve")
           and dataset in before[n]["datasets"] and dataset in after[n]["datasets"]]
  rows = []
  for name in names:
    old, new = before[name]["datasets"][dataset], after[name]["datasets"][dataset]
    vo, vn = _vectors(old), _vectors(new)
    rows.append([name, *(f"{lareqa.format_metric(old['metrics'][k], k)} → "
                         f"{lareqa.format_metric(new['metrics'][k], k)}, {_paired(vn, vo, k)}"
                         for k in TESTED)])
  return markdown_table([f"run ({dataset})", *(f"{HEADERS[k]}: before → after, Δ" for k in TESTED)],
                        rows)


def write_versus(before_dir: pathlib.Path, after_dir: pathlib.Path) -> str:
  """Writes `<after_dir>/versus.md`: `versus_table` per dataset; returns the markdown."""
  before, after = load_runs(before_dir), load_runs(after_dir)
  parts = [f"# {after_dir} against {before_dir}", "",
           "Paired by query (difference of macro averages, 95% bootstrap CI stratified by query "
           f"language, sign-flip randomisation p; {N_RESAMPLES} resamples).", ""]
  for dataset in sorted({d for r in after.values() for d in r["datasets"]}):
    parts += [f"## Evaluated on {dataset}", "", versus_table(before, after, dataset), ""]
  return _write_markdown(after_dir / "versus.md", parts)


def seen_unseen_table(runs: dict[str, dict], dataset: str, baseline: str | None = None) -> str:
  """Per run: Mo/Cr/Mul mAP over the query languages seen in training, and over those not seen.

  Which languages are seen differs from run to run, so absolute values are not comparable down a
  column; the paired gain over `baseline` (the untrained model) on the same queries is: each cell
  is 'value (Δ [95% CI])', grouped by query language.
  """
  base = _vectors(runs[baseline]["datasets"][dataset]) if baseline in runs else None
  rows = []
  for name, run in runs.items():
    seen_langs = set(run.get("train_langs") or [])
    vec = _vectors(run["datasets"][dataset])
    cells = []
    for seen in (True, False):
      group = np.array([(l in seen_langs) == seen for l in vec["lang"]])
      for k in ("mo_map", "cr_map", "mul_map"):
        ok = group & ~np.isnan(vec[k])
        if not ok.any():
          cells.append("—")
          continue
        cell = lareqa.format_metric(stats.macro_mean(vec[k][ok], vec["lang"][ok]), k)
        if base is not None and name != baseline:
          cell += f" ({_paired(vec, base, k, where=group, p_value=False)})"
        cells.append(cell)
    rows.append([name, "+".join(sorted(seen_langs)) or "none", *cells])
  lines = [markdown_table([f"run ({dataset})", "train langs", "seen: Mo", "Cr", "Mul", "unseen: Mo",
                           "Cr", "Mul"], rows)]
  if base is not None:
    lines += ["", f"In brackets: paired difference to **{baseline}** on the same queries, 95% "
              "stratified-bootstrap CI."]
  # Such languages are unseen by the encoder itself, not only by our fine-tuning.
  uncovered = sorted({l for run in runs.values() for l in run.get("uncovered_langs") or []
                      if l in run["datasets"][dataset]["languages"]})
  if uncovered:
    lines += ["", f"Languages the model does not cover (always unseen): {', '.join(uncovered)}."]
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Plots.
# ------------------------------------------------------------------------------------------------

def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


# A training curve of run summaries: (the summary's key, the metric's prefix, what it measures).
LOSS = ("loss_curve", "train/loss", "InfoNCE loss")
# With the distillation term on, train/loss is the objective: InfoNCE + weight x the term.
LOSS_DISTILLED = ("loss_curve", "train/loss",
                  "training loss (InfoNCE + the weighted distillation term)")
DISTILL = ("distill_curve", "train/distill_mse",
           "distillation term (2 − 2cos to the teacher's English embedding)")


def _loss_kinds(runs: dict[str, dict], curve=LOSS) -> list[str]:
  """The batch types whose loss (or other `curve`) any of `runs` logged, in a fixed order."""
  key, prefix, _ = curve
  return [k for k in ("mono", "cross", "mixed")
          if any(f"{prefix}_{k}" in r for run in runs.values() for r in run.get(key) or [])]


def plot_loss_curves(runs: dict[str, dict], path: pathlib.Path, curve=LOSS) -> None:
  """One panel per batch type, one line per run: each batch type has its own difficulty (an X-Y
  batch's loss sits above a mono batch's), so only same-type curves are comparable. curve: LOSS,
  or DISTILL for the distillation term."""
  plt = _plt()
  key, prefix, what = curve
  kinds = _loss_kinds(runs, curve)
  fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.8), sharey=True,
                           squeeze=False)
  colors = {name: f"C{i % 10}" for i, name in enumerate(runs)}
  for ax, kind in zip(axes[0], kinds):
    for name, run in runs.items():
      pts = [(r["step"], r[f"{prefix}_{kind}"]) for r in run.get(key) or []
             if f"{prefix}_{kind}" in r]
      if pts:
        ax.plot(*zip(*pts), "-", color=colors[name], label=name, lw=1.2)
    ax.set(xlabel="step", title=f"{kind} batches")
    ax.legend(fontsize=7)
  axes[0][0].set_ylabel(f"{what.split(' (')[0]} (mean over each log window)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_parallel_curves(runs: dict[str, dict], path: pathlib.Path) -> None:
  """Parallel-query distance against the training step, one line per run (e.g. per alpha)."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, (name, run) in enumerate(runs.items()):
    pts = [(r["step"], r["sq_dist"]) for r in run["parallel_curve"]]
    ax.plot(*zip(*pts), "o-", color=f"C{i % 10}", label=name, lw=1.2, ms=3)
  ax.set(xlabel="step", ylabel="mean squared distance of parallel queries")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_distill_curves(runs: dict[str, dict], path: pathlib.Path) -> None:
  """The distillation term per batch type, one line per run (`plot_loss_curves` of DISTILL)."""
  plot_loss_curves(runs, path, DISTILL)


def parallel_table(runs: dict[str, dict]) -> str:
  """Each run's parallel-query distance at the first, middle and last point of its curve."""
  lines = ["Squared distance between the embeddings of parallel queries (held-out questions, "
           "macro over language pairs; lower = translations closer), during training:", "",
           "| run | first point | middle | last |", "|---|---|---|---|"]
  for name, run in runs.items():
    c = run["parallel_curve"]
    cells = [f"{c[i]['sq_dist']:.4f} (step {c[i]['step']})" for i in (0, len(c) // 2, -1)]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def loss_table(runs: dict[str, dict], curve=LOSS) -> str:
  """Each run's mean loss per batch type over the first fifth of the log windows that saw that
  type and over the last fifth (at least one each): one window is noisy, and the types differ in
  difficulty, so only a cell's own change and one column's runs are comparable. curve: LOSS, or
  DISTILL for the distillation term."""
  key, prefix, what = curve
  kinds = _loss_kinds(runs, curve)
  lines = [f"Mean {what} per batch type, first fifth of its log windows → last fifth:", "",
           "| run | " + " | ".join(f"{k} batches" for k in kinds) + " |",
           "|---|" + "---|" * len(kinds)]
  for name, run in runs.items():
    cells = []
    for kind in kinds:
      values = [r[f"{prefix}_{kind}"] for r in run.get(key) or [] if f"{prefix}_{kind}" in r]
      k = -(-len(values) // 5)
      cells.append(f"{np.mean(values[:k]):.3f} → {np.mean(values[-k:]):.3f}" if values else "—")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_metric_vs(xs: list[float], runs: list[dict], dataset: str, xlabel: str,
                   path: pathlib.Path) -> None:
  """Mo/Cr/Mul mAP against `xs`, with each run's 95% CI as error bars."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  for k in ("mo_map", "cr_map", "mul_map"):
    ys = [r["datasets"][dataset]["metrics"][k] for r in runs]
    cis = [_ci((v := _vectors(r["datasets"][dataset]))[k], v["lang"]) for r in runs]
    err = np.array([[y - lo for y, (lo, _) in zip(ys, cis)], [hi - y for y, (_, hi) in zip(ys, cis)]])
    ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, label=HEADERS[k])
  ax.set(xlabel=xlabel, ylabel=f"{dataset} mAP (95% CI)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_heatmap(run: dict, dataset: str, title: str, path: pathlib.Path) -> None:
  plt = _plt()
  ds = run["datasets"][dataset]
  m = np.array([[np.nan if x is None else x for x in row] for row in ds["matrix_map"]])
  fig, ax = plt.subplots(figsize=(6, 5))
  im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
  ax.set_xticks(range(len(ds["langs"])), ds["langs"])
  ax.set_yticks(range(len(ds["langs"])), ds["langs"])
  ax.set(xlabel="candidate language", ylabel="query language", title=title)
  for i in range(m.shape[0]):
    for j in range(m.shape[1]):
      if m[i, j] == m[i, j]:
        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
  fig.colorbar(im, ax=ax, label="mAP")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ------------------------------------------------------------------------------------------------
# The scaling grid (languages_v2): strategy x number of training languages.
# ------------------------------------------------------------------------------------------------

STRATEGY_NAMES = {"mono": "X-X-mono", "cross": "X-Y", "hybrid": "hybrid"}
# The interaction: hybrid's slope minus each of the paper's two baselines'.
SLOPE_DIFFERENCES = (("hybrid", "mono"), ("hybrid", "cross"))


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A value with its 95% CI (two-level bootstrap) and, for differences, a two-sided p."""
  value: float
  low: float
  high: float
  p: float | None = None
  sd: float | None = None  # sd over the cell's runs (cells only; None for one run)


@dataclasses.dataclass
class ScalingAnalysis:
  """`scaling_analysis`'s numbers for one evaluation set (what report.md and the plot show).

  cells: {(strategy, k): run names} at the common budget; budget: (steps, batch) of those runs.
  Keyed by metric (one of TESTED) first: cell / seen / unseen: {(metric, (strategy, k)):
  Estimate}; slopes: {(metric, strategy): (Estimate, ks)}, change per doubling of k;
  slope_differences: {(metric, (a, b)): (Estimate, ks)}; edges: {(metric, (k, baseline)):
  Estimate of hybrid - baseline at that k}. budget_checks: {(run, metric): Estimate of that run
  - its cell at the common budget}; check_cells: {budget-check run: (strategy, k)}; notes: what
  a partial grid lacks."""
  dataset: str
  budget: tuple[int, int]
  cells: dict
  cell: dict
  seen: dict
  unseen: dict
  slopes: dict
  slope_differences: dict
  edges: dict
  budget_checks: dict
  check_cells: dict  # {budget-check run: (strategy, k)}
  notes: list


def _strategy_of(name: str, args: dict) -> str:
  mix = (float(args["mono"]), float(args["cross"]), float(args.get("mixed", 0.0)))
  for strategy, probs in grids.STRATEGIES.items():
    if np.allclose(mix, probs):
      return strategy
  raise ValueError(f"run {name}: batch mix mono/cross/mixed = {mix} is none of the grid's "
                   f"strategies {grids.STRATEGIES}")


def _scaling_budget(runs: dict[str, dict]) -> tuple[int, int]:
  """The (steps, batch) most runs share (the fewer steps on a tie): the grid's fixed budget."""
  budgets = [(int(r["args"]["steps"]), int(r["args"]["batch"])) for r in runs.values()]
  return max(sorted(set(budgets)), key=budgets.count)


def _cell_estimates(result: stats.ContrastResult, keys: list) -> dict:
  """{key: Estimate} of the first len(keys) contrasts, one cell's mean each, with its runs' sd."""
  out = {}
  for i, key in enumerate(keys):
    values = result.run_values[i]
    out[key] = Estimate(float(result.estimate[i]), float(result.ci_low[i]),
                        float(result.ci_high[i]),
                        sd=float(np.std(values, ddof=1)) if values.size > 1 else None)
  return out


def _contrast_estimate(result: stats.ContrastResult, i: int) -> Estimate:
  """Contrast i of a bootstrap as an Estimate with its p."""
  return Estimate(float(result.estimate[i]), float(result.ci_low[i]), float(result.ci_high[i]),
                  float(result.p_value[i]))


@dataclasses.dataclass
class _ScalingRuns:
  """The trained runs of one evaluation set, placed in the grid: info {run: (strategy, k,
  train langs, (steps, batch))}, cells {(strategy, k): runs at the common budget}, checks (runs
  at another budget), ks_of {strategy: its k, sorted}."""
  group: dict[str, dict]
  budget: tuple[int, int]
  info: dict
  cells: dict[tuple[str, int], list[str]]
  checks: list[str]
  ks_of: dict[str, list[int]]


def _scaling_runs(runs: dict[str, dict], dataset: str) -> _ScalingRuns:
  """The trained runs evaluated on `dataset` (an untrained model's summary has no loss curve),
  by cell, in the grid's order."""
  group = {n: r for n, r in runs.items()
           if dataset in r["datasets"] and r.get("args") and r.get("loss_curve")}
  if not group:
    raise ValueError(f"no trained runs evaluated on {dataset}")
  budget = _scaling_budget(group)
  info = {}
  for name, run in group.items():
    a = run["args"]
    info[name] = (_strategy_of(name, a), len(run["train_langs"]), set(run["train_langs"]),
                  (int(a["steps"]), int(a["batch"])))
  order = list(grids.STRATEGIES)
  cells: dict[tuple[str, int], list[str]] = {}
  for name in sorted(group, key=lambda n: (order.index(info[n][0]), info[n][1], n)):
    if info[name][3] == budget:
      cells.setdefault(info[name][:2], []).append(name)
  ks_of = {s: sorted(k for (t, k) in cells if t == s) for s in order}
  return _ScalingRuns(group, budget, info, cells, [n for n in group if info[n][3] != budget],
                      ks_of)


def _block(sr: _ScalingRuns, name: str) -> str:
  """A run's language set and seed ('ar+en', 'ar+...+zh seed 1'): the strategies at one k share
  them, so the analysis pairs runs of the same block across strategies."""
  seed = int(sr.group[name]["args"].get("seed", 0))
  return "+".join(sorted(sr.info[name][2])) + (f" seed {seed}" if seed else "")


def _grid_notes(sr: _ScalingRuns, dataset: str) -> list[str]:
  """What a partial grid lacks: runs not there yet, cells of one run, strategies with no slope."""
  notes = []
  expected = [r.name for r in grids.runs("languages_v2")
              if grids.evaluated_on(dict(train=r.args["train"])) == dataset]
  missing = [n for n in expected if n not in sr.group]
  if missing:
    notes.append(f"Partial grid: {len(missing)} of the {len(expected)} runs of the grid are not "
                 f"in this folder yet ({', '.join(missing)}); every figure below comes from the "
                 "runs that are.")
  single = [f"{STRATEGY_NAMES[s]} k={k}" for (s, k), names in sr.cells.items() if len(names) == 1]
  if single:
    notes.append(f"One run only (CI over queries alone, no run-level variance): "
                 f"{', '.join(single)}.")
  for k in sorted({k for _, k in sr.cells}):
    sets = {s: sorted(_block(sr, n) for n in names)
            for (s, kk), names in sr.cells.items() if kk == k}
    if len({tuple(v) for v in sets.values()}) > 1:
      held = "; ".join(f"{STRATEGY_NAMES[s]}: {', '.join(v)}" for s, v in sets.items())
      notes.append(f"At k={k} the strategies hold different runs ({held}): their contrasts "
                   "there (hybrid's edge, and through it the slope differences) mix which "
                   "languages were trained on with the strategy until the missing runs land.")
  for s, ks in sr.ks_of.items():
    if len(ks) < 2:
      notes.append(f"{STRATEGY_NAMES[s]}: {len(ks)} value(s) of k "
                   f"({', '.join(map(str, ks)) or 'none'}); no slope.")
  return notes


def _scaling_contrasts(sr: _ScalingRuns, notes: list[str]) -> tuple[np.ndarray, list]:
  """The contrast rows over the cells and their labels: cell means ('cell', key), slopes
  ('slope', strategy, ks), slope differences ('slope_diff', (a, b), ks) and hybrid's edge at
  each k ('edge', (k, baseline)). Appends to `notes` what cannot be compared."""
  keys = list(sr.cells)
  rows = list(np.eye(len(keys)))
  labels = [("cell", key) for key in keys]

  def slope_row(strategy, ks):
    row = np.zeros(len(keys))
    for k, wk in zip(ks, stats.ols_slope_weights(np.log2(ks))):
      row[keys.index((strategy, k))] = wk
    return row

  for s, ks in sr.ks_of.items():
    if len(ks) >= 2:
      rows.append(slope_row(s, ks))
      labels.append(("slope", s, tuple(ks)))
  all_ks = sorted({k for _, k in keys})
  for a, b in SLOPE_DIFFERENCES:
    shared = [k for k in sr.ks_of[a] if k in sr.ks_of[b]]
    if len(shared) < 2:
      notes.append(f"{STRATEGY_NAMES[a]} − {STRATEGY_NAMES[b]}: {len(shared)} shared value(s) "
                   "of k; no slope difference.")
      continue
    if shared != all_ks:
      notes.append(f"{STRATEGY_NAMES[a]} − {STRATEGY_NAMES[b]} slopes compared over k = "
                   f"{', '.join(map(str, shared))} (the k both have), not over every k of the "
                   "grid.")
    rows.append(slope_row(a, shared) - slope_row(b, shared))
    labels.append(("slope_diff", (a, b), tuple(shared)))
  for k in all_ks:
    for b in ("mono", "cross"):
      if ("hybrid", k) in sr.cells and (b, k) in sr.cells:
        row = np.zeros(len(keys))
        row[keys.index(("hybrid", k))], row[keys.index((b, k))] = 1, -1
        rows.append(row)
        labels.append(("edge", (k, b)))
  return np.stack(rows), labels


def _paired_query_vectors(group: dict[str, dict], dataset: str
                          ) -> tuple[dict[str, dict], np.ndarray]:
  """Each run's per-query vectors and the queries' languages; ValueError where two runs were
  evaluated on other queries (per-query values are paired by position)."""
  vecs = {n: _vectors(group[n]["datasets"][dataset]) for n in group}
  first = next(iter(vecs))
  lang = vecs[first]["lang"]
  for n, v in vecs.items():
    if v["lang"].shape != lang.shape or (v["lang"] != lang).any():
      raise ValueError(f"runs {first} and {n} hold different {dataset} queries (per_query.lang "
                       "differs): they were not evaluated on the same data")
  return vecs, lang


def _seen_unseen_cells(sr: _ScalingRuns, values: dict[str, np.ndarray], lang: np.ndarray,
                       seen: bool, n_resamples: int, seed: int) -> dict:
  """{cell: Estimate} over the query languages each run trained on (seen) or not (unseen):
  which those are differs from run to run, so they are the runs' strata."""
  present = set(lang)
  keys, matrices, strata = [], [], []
  for key, names in sr.cells.items():
    groups = {n: sr.info[n][2] & present if seen else present - sr.info[n][2] for n in names}
    names = [n for n in names if groups[n]]
    if names:
      keys.append(key)
      matrices.append(np.stack([values[n] for n in names]))
      strata.append([groups[n] for n in names])
  if not keys:
    return {}
  result = stats.contrast_bootstrap(matrices, np.eye(len(keys)), strata=lang, run_strata=strata,
                                    n_resamples=n_resamples, seed=seed)
  return _cell_estimates(result, keys)


def scaling_analysis(runs: dict[str, dict], dataset: str, n_resamples: int = N_RESAMPLES,
                     seed: int = 0) -> ScalingAnalysis:
  """The languages_v2 analysis of the trained runs evaluated on `dataset`, from their summaries.

  Inputs: runs as `load_runs` gives them (each with its args and train_langs). A cell is one
  strategy at one number k of training languages; its runs (language sets, training seeds) are
  the run level of a two-level bootstrap (`stats.contrast_bootstrap`: runs within each cell, then
  queries stratified by language, shared by all cells), blocked: cells at one k whose runs have
  the same language sets and seeds draw the same runs, so the set's effect cancels in their
  contrasts. Per strategy, the slope is the OLS slope of
  its cell means on log2 k (change per doubling); the interaction is hybrid's slope minus X-X-mono's
  and minus X-Y's, over the k both have. Runs at another budget than most (steps, batch) are
  budget checks, each against its cell at the common budget. Missing cells are skipped and named
  in `notes`: slopes use the k that exist (two at least).
  Related: `write_scaling_report` (markdown + plot), `grids.runs('languages_v2')` (the grid)."""
  sr = _scaling_runs(runs, dataset)
  notes = _grid_notes(sr, dataset)
  contrasts, labels = _scaling_contrasts(sr, notes)
  out = ScalingAnalysis(dataset, sr.budget, sr.cells, {}, {}, {}, {}, {}, {}, {},
                        {n: sr.info[n][:2] for n in sr.checks}, notes)
  vecs, lang = _paired_query_vectors(sr.group, dataset)
  keys = list(sr.cells)
  blocks = [[_block(sr, n) for n in sr.cells[key]] for key in keys]
  for metric in TESTED:
    ok = ~np.any([np.isnan(v[metric]) for v in vecs.values()], axis=0)
    values = {n: v[metric][ok] for n, v in vecs.items()}
    matrices = [np.stack([values[n] for n in sr.cells[key]]) for key in keys]
    result = stats.contrast_bootstrap(matrices, contrasts, strata=lang[ok], run_blocks=blocks,
                                      n_resamples=n_resamples, seed=seed)
    out.cell.update({(metric, key): e for key, e in _cell_estimates(result, keys).items()})
    for i, label in enumerate(labels):
      if label[0] == "slope":
        out.slopes[(metric, label[1])] = (_contrast_estimate(result, i), label[2])
      elif label[0] == "slope_diff":
        out.slope_differences[(metric, label[1])] = (_contrast_estimate(result, i), label[2])
      elif label[0] == "edge":
        out.edges[(metric, label[1])] = _contrast_estimate(result, i)
    for seen, target in ((True, out.seen), (False, out.unseen)):
      cells = _seen_unseen_cells(sr, values, lang[ok], seen, n_resamples, seed)
      target.update({(metric, key): e for key, e in cells.items()})
    for name in sr.checks:
      strategy, k = sr.info[name][:2]
      if (strategy, k) not in sr.cells:
        notes.append(f"{name}: no {STRATEGY_NAMES[strategy]} k={k} runs at the common budget "
                     "to compare it with.")
        continue
      result = stats.contrast_bootstrap(
          [values[name][None], matrices[keys.index((strategy, k))]], [[1.0, -1.0]],
          strata=lang[ok], n_resamples=n_resamples, seed=seed)
      out.budget_checks[(name, metric)] = _contrast_estimate(result, 0)
  out.notes = list(dict.fromkeys(notes))  # budget-check notes repeat once per metric
  return out


def _est(e: Estimate | None, k: str, signed: bool = False) -> str:
  if e is None:
    return "—"
  if signed:
    d = 1 if k == "rank_distance" else 3
    return (f"{e.value:+.{d}f} [{e.low:+.{d}f}, {e.high:+.{d}f}]"
            + (f" p={e.p:.3g}" if e.p is not None else ""))
  sd = f" ± {lareqa.format_metric(e.sd, k)}" if e.sd is not None else ""
  return f"{lareqa.format_metric(e.value, k)}{sd} [{lareqa.format_metric(e.low, k)}, {lareqa.format_metric(e.high, k)}]"


def _verdict(e: Estimate, metric: str, baseline: str) -> str:
  """Plain words for a slope difference hybrid - baseline (lower rank distance is better)."""
  if e.low <= 0 <= e.high:
    return (f"no change of hybrid's edge over {STRATEGY_NAMES[baseline]} with k is detectable "
            "(the CI covers 0; its ends bound the change the data allow)")
  better = (e.value > 0) != (metric == "rank_distance")
  return f"hybrid's edge over {STRATEGY_NAMES[baseline]} {'grows' if better else 'shrinks'} with k"


def scaling_markdown(a: ScalingAnalysis, runs: dict[str, dict], png: str | None) -> str:
  """The report section of one evaluation set: design, every cell, seen/unseen, the interaction,
  the budget check, the plot, and what the data can and cannot show."""
  steps, batch = a.budget
  lines = [f"## Evaluated on {a.dataset}", "",
           f"Budget: {steps} steps × batch {batch} = {steps * batch} training queries per run "
           "at every k, so each of k training languages gets about 1/k of them. Cells are one "
           "strategy at one k; their runs are language sets (k < all) or training seeds "
           f"(k = all). 95% CIs: two-level bootstrap (runs within each cell, then queries "
           f"stratified by language, shared by every cell), {N_RESAMPLES} resamples; the runs "
           "are blocked: the strategies at one k that hold the same language sets (or seeds) "
           "draw the same ones, so which languages a set holds cancels in hybrid's edge and "
           "in the slope differences (a cell whose runs differ from its neighbours' draws on "
           "its own).", ""]
  if a.notes:
    lines += [f"- {n}" for n in a.notes] + [""]
  metrics = [HEADERS[k] for k in TESTED]
  members = [n for names in a.cells.values() for n in names]
  members += sorted({n for n, _ in a.budget_checks})
  every_run = []
  for n in members:
    r = runs[n]
    m = r["datasets"][a.dataset]["metrics"]
    seed = r["args"].get("seed", grids.DEFAULTS["seed"])  # saved args hold what the run set
    every_run.append([n, STRATEGY_NAMES[_strategy_of(n, r["args"])], len(r["train_langs"]),
                      "+".join(r["train_langs"]), seed, r["args"]["steps"],
                      *(lareqa.format_metric(m[k], k) for k in TESTED)])
  lines += ["### Every run", "",
            markdown_table(["run", "strategy", "k", "train langs", "seed", "steps", *metrics],
                           every_run),
            "", "### Every cell: mean ± sd over its runs [95% CI]", "",
            markdown_table(["strategy", "k", "runs", *metrics],
                           [[STRATEGY_NAMES[s], k, len(names),
                             *(_est(a.cell.get((m, (s, k))), m) for m in TESTED)]
                            for (s, k), names in a.cells.items()])]
  lines += ["", "### Seen vs unseen query languages: mean ± sd over runs [95% CI]", "",
            "A run's seen group is the query languages it trained on, its unseen group the rest; "
            "which languages those are differs from run to run and shrinks (unseen) with k, so "
            "compare strategies within a row, not rows down a column. A cell averages the runs "
            "whose group is not empty; '—' where none is.", "",
            markdown_table(["strategy", "k", *(f"seen: {m}" for m in metrics),
                            *(f"unseen: {m}" for m in metrics)],
                           [[STRATEGY_NAMES[s], k,
                             *(_est(a.seen.get((m, (s, k))), m) for m in TESTED),
                             *(_est(a.unseen.get((m, (s, k))), m) for m in TESTED)]
                            for s, k in a.cells]),
            "", "### Hybrid's edge at each k: hybrid − baseline [95% CI] p", "",
            markdown_table(["k", "baseline", *_deltas(TESTED)],
                           [[k, STRATEGY_NAMES[b],
                             *(_est(a.edges[(m, (k, b))], m, True) for m in TESTED)]
                            for k in sorted({k for _, k in a.cells}) for b in ("mono", "cross")
                            if (TESTED[0], (k, b)) in a.edges])]
  lines += ["", "### The interaction: slopes in log2 k (change per doubling of the number of "
            "training languages) [95% CI] p", "",
            "OLS of the cell means on log2 k; p is the two-sided bootstrap p of slope = 0 (or of "
            "no slope difference). A positive difference means hybrid's value rises faster with "
            "k than the baseline's (for rank distance, lower is better).", ""]
  slopes = []
  for m in TESTED:
    cells = [_est(a.slopes[(m, s)][0], m, True) + f" (k={','.join(map(str, a.slopes[(m, s)][1]))})"
             if (m, s) in a.slopes else "—" for s in grids.STRATEGIES]
    cells += [_est(a.slope_differences[(m, d)][0], m, True) if (m, d) in a.slope_differences
              else "—" for d in SLOPE_DIFFERENCES]
    slopes.append([HEADERS[m], *cells])
  lines.append(markdown_table(
      ["metric", *(STRATEGY_NAMES[s] for s in grids.STRATEGIES),
       *(f"{STRATEGY_NAMES[x]} − {STRATEGY_NAMES[y]}" for x, y in SLOPE_DIFFERENCES)], slopes))
  verdicts = [f"- {HEADERS[m]}, hybrid − {STRATEGY_NAMES[b]}: "
              f"{_est(a.slope_differences[(m, (h, b))][0], m, True)} per doubling: "
              + _verdict(a.slope_differences[(m, (h, b))][0], m, b) + "."
              for m in TESTED for h, b in SLOPE_DIFFERENCES if (m, (h, b)) in a.slope_differences]
  if verdicts:
    lines += ["", "What the slope differences say:", ""] + verdicts
  if a.budget_checks:
    lines += ["", f"### Budget check: runs at another budget − their cell at {steps} steps "
              "[95% CI] p", "",
              markdown_table(["run", *_deltas(TESTED)],
                             [[n, *(_est(a.budget_checks.get((n, m)), m, True) for m in TESTED)]
                              for n in sorted({n for n, _ in a.budget_checks})])]
  if png:
    lines += ["", f"![mAP and rank distance against k]({png})"]
  lines += ["", "What these runs cannot show:", "",
            "- The budget is fixed, so a slope mixes \"more languages\" with \"fewer examples per "
            "language\"; the budget check (one hybrid run at k = all) is the only look at whether "
            "the budget limits the large-k end.",
            "- The run level has few runs per cell: at k < all it is two language sets (how much "
            "a cell depends on which languages it holds, estimated from two draws); at k = all "
            "it is training seeds, another source of variance. A bootstrap of two runs "
            "understates their variance, so where a cell's runs disagree (its ± sd) read its CIs "
            "and p-values as optimistic; more language sets or seeds make them trustworthy.",
            "- The slope is a straight line in log2 k through at most four sizes: curvature "
            "(e.g. a plateau after a few languages) is not tested.",
            "- One model, one recipe and one evaluation set per direction: the answer may differ "
            "for other encoders or budgets.", ""]
  return "\n".join(lines)


def plot_scaling(a: ScalingAnalysis, path: pathlib.Path) -> None:
  """Four panels (Mo, Cr, Mul mAP, rank distance) against k on a log axis: one line per strategy
  with its 95% CI band; runs at another budget as single marked points."""
  plt = _plt()
  fig, axes = plt.subplots(1, 4, figsize=(17, 4))
  ks = sorted({k for _, k in a.cells})
  for ax, m in zip(axes, TESTED):
    for i, s in enumerate(grids.STRATEGIES):
      pts = [(k, a.cell[(m, (s, k))]) for k in ks if (m, (s, k)) in a.cell]
      if not pts:
        continue
      x = [k for k, _ in pts]
      ax.plot(x, [e.value for _, e in pts], "o-", color=f"C{i}", label=STRATEGY_NAMES[s])
      ax.fill_between(x, [e.low for _, e in pts], [e.high for _, e in pts], color=f"C{i}",
                      alpha=0.2, lw=0)
    for (name, metric), e in a.budget_checks.items():
      s, k = a.check_cells[name]
      if metric == m and (m, (s, k)) in a.cell:  # its value: its cell's mean + its difference
        ax.plot([k], [a.cell[(m, (s, k))].value + e.value], "*", ms=11, color="k",
                label=f"{name} ({STRATEGY_NAMES[s]})")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set(xlabel="training languages k (log axis)", title=HEADERS[m])
  axes[0].set_ylabel(f"{a.dataset} (95% CI band)")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_scaling_report(directory: pathlib.Path, n_resamples: int = N_RESAMPLES) -> str:
  """Writes `<directory>/report.md` and `scaling_<dataset>.png` of the languages_v2 grid from the
  run summaries there (`scaling_analysis` per evaluation set); returns the markdown."""
  runs = load_runs(directory)
  parts = ["# Experiment: languages_v2 (strategy × number of training languages)", ""]
  for dataset in sorted({d for r in runs.values() for d in r["datasets"]}):
    a = scaling_analysis(runs, dataset, n_resamples)
    png = directory / f"scaling_{dataset}.png"
    plot_scaling(a, png)
    parts.append(scaling_markdown(a, runs, png.name))
  return _write_markdown(directory / "report.md", parts)


# ------------------------------------------------------------------------------------------------
# The methods comparison: hybrid against distillation and LSAR, last and selected checkpoints.
# ------------------------------------------------------------------------------------------------

# The paper's XLM-R hybrid rows and the targets set from them, by evaluation set (the other set
# trains): Mo, Cr, Mul mAP (higher is better) and rank distance (lower is better).
PAPER_HYBRID = {"mlqa-r": dict(mo_map=.648, cr_map=.623, mul_map=.512, rank_distance=227),
                "xquad-r": dict(mo_map=.798, cr_map=.705, mul_map=.593, rank_distance=287)}
TARGETS = {"mlqa-r": dict(mo_map=.66, cr_map=.62, mul_map=.52, rank_distance=230),
           "xquad-r": dict(mo_map=.80, cr_map=.71, mul_map=.60, rank_distance=285)}
# A methods run's results: (checkpoint, with LSAR). 'last': the summary's own; 'selected': the
# best step by the validation loss (`best`); LSAR: the summary's `lsar` part.
VARIANTS = (("last", False), ("selected", False), ("last", True), ("selected", True))
REFERENCE = ("hybrid", "last", False)  # the recipe as it stands: what every row is paired with


@dataclasses.dataclass(frozen=True)
class Cell:
  """One row of the methods table: a method (a run name without its training set and seed),
  a checkpoint and LSAR on or off, with each seed's results on one dataset (and run name)."""
  method: str
  checkpoint: str  # last | selected | untrained
  lsar: bool
  results: tuple[dict, ...]
  runs: tuple[str, ...]

  @property
  def key(self) -> tuple[str, str, bool]:
    return (self.method, "last" if self.checkpoint == "untrained" else self.checkpoint, self.lsar)

  def label(self) -> str:
    return f"{self.method}, {self.checkpoint}" + (", LSAR" if self.lsar else "")

  def mean(self, k: str) -> float:
    return float(np.mean([r["metrics"][k] for r in self.results]))


def _variant(run: dict, dataset: str, checkpoint: str, with_lsar: bool) -> dict | None:
  """One dataset's results of a run summary for a checkpoint and LSAR (VARIANTS), or None when
  the run has none (no validation split, no LSAR evaluation, an untrained model's 'selected')."""
  part = run.get("lsar") if with_lsar else run
  if part and checkpoint == "selected":
    part = part.get("best")
  return ((part or {}).get("datasets") or {}).get(dataset)


def method_cells(runs: dict[str, dict], dataset: str) -> list[Cell]:
  """The methods table's rows on `dataset`: every method (seeds pooled by name, training-set
  prefix dropped) in the runs' order, each VARIANT its runs have results for."""
  methods: dict[str, list[str]] = {}
  for name, run in runs.items():
    if dataset in run["datasets"]:
      base = grids.seed_of(name)[0]
      train = (run.get("args") or {}).get("train", "")
      methods.setdefault(base[len(train) + 1:] if base.startswith(f"{train}-") else base,
                         []).append(name)
  cells = []
  for method, names in methods.items():
    names = sorted(names, key=lambda n: grids.seed_of(n)[1])
    untrained = not runs[names[0]].get("loss_curve")
    for checkpoint, with_lsar in VARIANTS:
      results = [_variant(runs[n], dataset, checkpoint, with_lsar) for n in names]
      if all(r is not None for r in results):
        shown = "untrained" if untrained else checkpoint
        cells.append(Cell(method, shown, with_lsar, tuple(results), tuple(names)))
  return cells


def _selected_steps(runs: dict[str, dict], cell: Cell) -> str:
  """The steps a cell's seeds evaluated: the selected one or the last (comma-joined)."""
  if cell.checkpoint == "untrained":
    return "—"
  steps = [runs[n]["selection"]["step"] if cell.checkpoint == "selected" else
           runs[n].get("selection", {}).get("last_step") or runs[n]["tag"] for n in cell.runs]
  return ",".join(str(s).removeprefix("step_") for s in steps)


def methods_table(runs: dict[str, dict], cells: list[Cell], dataset: str) -> str:
  """Every cell: mean ± sd over seeds [95% CI over seeds and queries] of the tested metrics,
  and the mean over seeds of the R@k metrics; then each cell paired with REFERENCE."""
  rk = [k for k in METRICS if k not in TESTED]
  rows = [[c.method, c.checkpoint, "yes" if c.lsar else "no", str(len(c.results)),
           _selected_steps(runs, c), *(seed_cell(list(c.results), k) for k in TESTED),
           *(lareqa.format_metric(c.mean(k), k) for k in rk)] for c in cells]
  lines = [f"Every method on {dataset}: mean ± sd over training seeds [95% CI over seeds and "
           f"queries, two-level bootstrap, {N_RESAMPLES} resamples]; R@k: mean over seeds. "
           "'selected': the step with the lowest held-out validation loss; 'last': the final "
           "step.", "",
           markdown_table(["method", "checkpoint", "LSAR", "seeds", "steps",
                           *(HEADERS[k] for k in TESTED), *(HEADERS[k] for k in rk)], rows)]
  ref = next((c for c in cells if c.key == REFERENCE), None)
  if ref is None:
    return "\n".join(lines + ["", f"(No {REFERENCE[0]} run with a {REFERENCE[1]} checkpoint: "
                              "nothing to pair with.)"])
  lines += ["", f"Against **{ref.label()}** (the recipe as it stands), across seeds: seeds "
            "resampled separately for each row, queries paired; Δ [95% CI] and two-sided "
            "bootstrap p:", "",
            markdown_table(["method", "checkpoint", "LSAR", *_deltas(TESTED)],
                           [[c.method, c.checkpoint, "yes" if c.lsar else "no",
                             *(seed_cell(list(c.results), k, list(ref.results))
                               for k in TESTED)] for c in cells if c is not ref])]
  return "\n".join(lines)


# The questions the grid answers, as (question, cell, baseline cell) keys: what hybrid batching
# adds once distillation is in, what distillation and LSAR add to hybrid, what selection adds.
QUESTIONS = (
    ("hybrid batches vs X-X-mono, both distilled", ("hybrid-distill", "last", False),
     ("mono-distill", "last", False)),
    ("hybrid InfoNCE on top of distillation", ("hybrid-distill", "last", False),
     ("distill", "last", False)),
    ("distillation on top of hybrid", ("hybrid-distill", "last", False),
     ("hybrid", "last", False)),
    ("LSAR on top of hybrid", ("hybrid", "last", True), ("hybrid", "last", False)),
    ("LSAR on top of hybrid + distillation", ("hybrid-distill", "last", True),
     ("hybrid-distill", "last", False)),
    ("hybrid training vs LSAR alone (untrained)", ("hybrid", "last", False),
     ("pretrained", "last", True)),
    ("hybrid training on top of LSAR", ("hybrid", "last", True), ("pretrained", "last", True)),
    ("validation selection, hybrid", ("hybrid", "selected", False), ("hybrid", "last", False)),
    ("validation selection, hybrid + distillation", ("hybrid-distill", "selected", False),
     ("hybrid-distill", "last", False)))


def questions_table(cells: list[Cell]) -> str:
  """QUESTIONS' contrasts that these cells can make, across seeds as in `methods_table`."""
  by_key = {c.key: c for c in cells}
  rows = [[question, f"{by_key[a].label()} − {by_key[b].label()}",
           *(seed_cell(list(by_key[a].results), k, list(by_key[b].results)) for k in TESTED)]
          for question, a, b in QUESTIONS if a in by_key and b in by_key]
  if not rows:
    return ""
  return "\n".join(["What each ingredient adds (a − b across seeds; the same two-level bootstrap; "
                    "LSAR and selection rows compare the same runs, resampled as if apart, so "
                    "their CIs are conservative):", "",
                    markdown_table(["question", "a − b", *_deltas(TESTED)], rows)])


def best_cell(cells: list[Cell]) -> Cell:
  """The cell with the highest mean Mul mAP over seeds (the paper's language-bias-sensitive
  metric: every language's candidates in one pool); the earlier cell on a tie."""
  return cells[max(range(len(cells)), key=lambda i: (cells[i].mean("mul_map"), -i))]


def headline_table(cells: list[Cell], dataset: str) -> str:
  """The best cell (`best_cell`) and the recipe (REFERENCE) against the targets on `dataset`
  and the paper's XLM-R hybrid row: means over seeds, ✓ where a target is met."""
  if dataset not in TARGETS:
    return ""
  target, paper = TARGETS[dataset], PAPER_HYBRID[dataset]

  def met(k, v):
    ok = v <= target[k] if k == "rank_distance" else v >= target[k]
    return f"{lareqa.format_metric(v, k)} {'✓' if ok else '✗'}"

  best = best_cell(cells)
  ref = next((c for c in cells if c.key == REFERENCE), None)
  ours = [("best: " + best.label(), best)] + ([("recipe: " + ref.label(), ref)]
                                               if ref is not None and ref is not best else [])
  other = "xquad-r" if dataset == "mlqa-r" else "mlqa-r"
  rows = [[f"target ({other} → {dataset})",
           *((("≤ " if k == "rank_distance" else "≥ ") + lareqa.format_metric(target[k], k))
             for k in TESTED), ""],
          ["paper, XLM-R hybrid", *(lareqa.format_metric(paper[k], k) for k in TESTED), "—"]]
  rows += [[label, *(met(k, c.mean(k)) for k in TESTED), str(len(c.results))]
           for label, c in ours]
  return "\n".join([f"Headline on {dataset}: the best cell by mean Mul mAP against the targets "
                    "(✓ met, ✗ not; means over seeds):", "",
                    markdown_table(["", *(HEADERS[k] for k in TESTED), "seeds"], rows)])


def write_methods_report(directory: pathlib.Path) -> str:
  """Writes `<directory>/report.md` and `distill_<dataset>.png` of the methods grid from the run
  summaries there; returns the markdown. Per evaluation set: the headline, every method x
  checkpoint x LSAR cell (`methods_table`), the ingredients' contrasts (`questions_table`), and
  the distillation term's curves per batch type (summaries' `distill_curve`)."""
  runs = _in_grid_order(load_runs(directory), "methods")
  parts = ["# Experiment: methods (hybrid against distillation and LSAR, over seeds)", ""]
  for dataset in sorted({d for r in runs.values() for d in r["datasets"]}):
    group = {n: r for n, r in runs.items() if dataset in r["datasets"]}
    cells = method_cells(group, dataset)
    parts += [f"## Evaluated on {dataset}", "", headline_table(cells, dataset), "",
              methods_table(group, cells, dataset), ""]
    questions = questions_table(cells)
    if questions:
      parts += [questions, ""]
    distilled = {n: r for n, r in group.items() if r.get("distill_curve")}
    if distilled:
      parts += [loss_table(distilled, DISTILL), ""]
      parts += _figure(directory, f"distill_{dataset}.png", "distillation term",
                       plot_distill_curves, distilled)
  return _write_markdown(directory / "report.md", parts)


def lsar_sweep(runs: dict[str, dict]) -> dict[str, dict[str, dict]]:
  """The lsar grid's rows per evaluation set: {dataset: {row: {datasets, rank, subspace}}}, the
  untrained model plain ('rank 0 (plain)') first, then each run's LSAR results by rank.

  Inputs: run summaries with an `lsar` part (`experiments.evaluate_lsar`). Raises ValueError
  naming a run without one."""
  bare = [n for n, r in runs.items() if "lsar" not in r]
  if bare:
    raise ValueError(f"runs {bare} have no LSAR results (grid arg lsar=<rank>): not lsar runs")
  out: dict[str, dict[str, dict]] = {}
  for run in sorted(runs.values(), key=lambda r: r["lsar"]["rank"]):
    part = run["lsar"]
    for dataset in part["datasets"]:
      rows = out.setdefault(dataset, {"rank 0 (plain)": {"datasets": run["datasets"], "rank": 0}})
      rows[f"rank {part['rank']}"] = {"datasets": part["datasets"], "rank": part["rank"],
                                      "subspace": part["subspace"]}
  return out


def removed_share(singular_values: Sequence[float], rank: int) -> float:
  """The share of the language means' spread (sum of squared singular values of the centred
  means) that the top `rank` directions hold: what LSAR at that rank removes of it."""
  sq = np.square(np.asarray(singular_values, dtype=np.float64))
  return float(sq[:rank].sum() / sq.sum()) if sq.sum() > 0 else 0.0


def write_lsar_report(directory: pathlib.Path) -> str:
  """Writes `<directory>/report.md` and `lsar_<dataset>.png` of the lsar grid (the untrained model
  at each LSAR rank) from the run summaries there; returns the markdown. Per evaluation set:
  every rank paired against the plain model (`comparison_table`), the share of the language
  means' spread each rank removes, and mAP against the rank."""
  parts = ["# Experiment: lsar (language-subspace removal on the untrained model, by rank)", ""]
  for dataset, rows in sorted(lsar_sweep(load_runs(directory)).items()):
    ranked = [r for r in rows.values() if r["rank"]]
    subspace = ranked[-1]["subspace"]
    shares = [[str(r["rank"]), f"{removed_share(r['subspace']['singular_values'], r['rank']):.3f}"]
              for r in ranked]
    parts += [f"## Evaluated on {dataset}", "",
              f"Subspace estimated from the training set's {len(subspace['langs'])} languages "
              f"({', '.join(subspace['langs'])}).", "",
              comparison_table(rows, dataset, "rank 0 (plain)"), "",
              "Share of the spread of the language means (centred) that each rank removes:", "",
              markdown_table(["rank", "removed share"], shares), ""]
    parts += _figure(directory, f"lsar_{dataset}.png", "mAP by LSAR rank", plot_metric_vs,
                     [r["rank"] for r in rows.values()], list(rows.values()), dataset,
                     "LSAR rank (0: plain)")
  return _write_markdown(directory / "report.md", parts)


# ------------------------------------------------------------------------------------------------
# Reports.
# ------------------------------------------------------------------------------------------------

def _write_markdown(path: pathlib.Path, parts: list[str]) -> str:
  """Writes the report's lines to `path`; returns the markdown."""
  text = "\n".join(parts)
  path.write_text(text)
  return text


def load_runs(directory: pathlib.Path) -> dict[str, dict]:
  paths = sorted(directory.glob("*.json"))
  if not paths:
    raise FileNotFoundError(f"no run summaries (*.json) in {directory}")
  runs = {}
  for p in paths:
    run = json.loads(p.read_text())
    if "datasets" not in run:
      raise ValueError(f"{p}: not a run summary (no 'datasets')")
    langs = run.get("args", {}).get("langs")
    if langs is not None:
      run["train_langs"] = _train_langs(run)
    runs[run.get("run", p.stem)] = run
  return runs


def _train_langs(run: dict) -> list[str]:
  # The run's arg says which languages it trained on ('all' depends on the model: grids).
  return list(grids.train_langs(grids.parse(",".join(f"{k}={v}" for k, v in run["args"].items()))))


def _in_grid_order(runs: dict[str, dict], experiment: str) -> dict[str, dict]:
  """The experiment's own run order (alpha0 ... alpha1, not alpha0.25 ... alpha1); others last."""
  try:
    order = [r.name for r in grids.runs(experiment)]
  except ValueError:
    order = []
  rank = {n: i for i, n in enumerate(order)}
  return dict(sorted(runs.items(), key=lambda kv: (rank.get(kv[0], len(order)), kv[0])))


def _figure(directory: pathlib.Path, name: str, alt: str, plot, *args) -> list[str]:
  """Draws `plot(*args, path)` into `directory/name`; the report lines that show it."""
  plot(*args, directory / name)
  return [f"![{alt}]({name})", ""]


def write_report(experiment: str, directory: pathlib.Path, seed_sd_from: str | None = None
                 ) -> str:
  """Writes `<directory>/report.md` and PNGs from the run summaries there; returns the markdown.

  seed_sd_from: '<dir>/<run name>' of runs with several training seeds; one-seed comparisons
  then also get CIs widened by their seed sd (`seed_widened_table`). languages_v2 has a report of
  its own (`write_scaling_report`), whose cells carry their own run-level variance."""
  if experiment == "languages_v2":
    if seed_sd_from:
      raise ValueError("--seed_sd_from is not used by languages_v2: its cells hold several runs "
                       "(language sets or seeds) whose spread the CIs cover already")
    return write_scaling_report(directory)
  if experiment == "methods":
    if seed_sd_from:
      raise ValueError("--seed_sd_from is not used by methods: its rows pool their own seeds")
    return write_methods_report(directory)
  if experiment == "lsar":
    if seed_sd_from:
      raise ValueError("--seed_sd_from is not used by lsar: it trains nothing")
    return write_lsar_report(directory)
  runs = _in_grid_order(load_runs(directory), experiment)
  parts = [f"# Experiment: {experiment}", ""]
  datasets = sorted({d for r in runs.values() for d in r["datasets"]})
  for dataset in datasets:
    group = {n: r for n, r in runs.items() if dataset in r["datasets"]}
    baseline = BASELINES.get(experiment) or next(
        (n for n in group if n.endswith("-mono")), None)
    parts += [f"## Evaluated on {dataset}", "", comparison_table(group, dataset, baseline), ""]
    if any(grids.seed_of(n)[1] for n in group):
      # strategies: hybrid's claims are against X-X-mono (Mo) and X-Y (Cr, Mul).
      cross = [n for n in group if n.endswith("-cross")] if experiment == "strategies" else []
      parts += [seed_table(group, dataset, [b for b in (baseline, *cross) if b]), ""]
    if experiment == "recipe":
      parts += [ablation_table(group, dataset), ""]
    if seed_sd_from:
      pairs = _one_seed_pairs(group, experiment, baseline)
      parts += [seed_widened_table(group, dataset, pairs, seed_sd_from), ""]
    trained = {n: r for n, r in group.items() if r.get("loss_curve")}
    if trained:
      if experiment == "ratio":
        distilled_any = any(r.get("distill_curve") for r in trained.values())
        parts += [loss_table(trained, LOSS_DISTILLED if distilled_any else LOSS), ""]
      parts += _figure(directory, f"loss_{dataset}.png", "loss curves", plot_loss_curves, trained)
      best = max(trained, key=lambda n: trained[n]["datasets"][dataset]["metrics"]["cr_map"])
      name = f"heatmap_{dataset}_{best}.png"
      # A new run can change which one is best: an older run's heatmap would linger unreferenced.
      for old in directory.glob(f"heatmap_{dataset}_*.png"):
        if old.name != name:
          old.unlink()
      parts += _figure(directory, name, "heatmap", plot_heatmap, trained[best], dataset,
                       f"{best}: mAP, query x candidate language")
    distilled = {n: r for n, r in trained.items() if r.get("distill_curve")}
    if distilled:
      # The ratio sweep with --set distill=<weight>: how alpha changes the MSE term's convergence.
      parts += [loss_table(distilled, DISTILL), ""]
      parts += _figure(directory, f"distill_{dataset}.png", "distillation term",
                       plot_distill_curves, distilled)
    if experiment == "ratio":
      alphas = sorted((r["args"]["mono"], n) for n, r in group.items()
                      if n.startswith("alpha"))
      parts += _figure(directory, f"alpha_{dataset}.png", "alpha", plot_metric_vs,
                       [a for a, _ in alphas], [group[n] for _, n in alphas], dataset,
                       "alpha (probability of an X-X-mono batch)")
    curves = {n: r for n, r in group.items() if r.get("parallel_curve")}
    if curves:
      parts += [parallel_table(curves), ""]
      parts += _figure(directory, f"parallel_{dataset}.png", "parallel-query distance",
                       plot_parallel_curves, curves)
    if experiment == "languages":
      parts += [seen_unseen_table(group, dataset, baseline), ""]
      ordered = sorted(((len(r["train_langs"]), n) for n, r in group.items()
                        if n.startswith("langs")))
      parts += _figure(directory, f"languages_{dataset}.png", "languages", plot_metric_vs,
                       [k for k, _ in ordered], [group[n] for _, n in ordered], dataset,
                       "number of training languages")
  return _write_markdown(directory / "report.md", parts)


def _datasets_of(path: pathlib.Path) -> dict[str, dict]:
  """{dataset: compact LAReQA result} of an eval.py output (W/eval/<tag>.json) or of a run
  summary under results/ (which holds them compacted already)."""
  data = json.loads(path.read_text())
  if "details" in data:
    return {n: compact(d) for n, d in lareqa_details(data).items()}
  if "datasets" in data:
    return data["datasets"]
  raise ValueError(f"{path}: neither a hybrid_ir.eval output (no 'details') nor a run summary "
                   "under results/ (no 'datasets')")


def _seed_files(source: pathlib.Path) -> list[pathlib.Path]:
  """What a compare argument names: a file, or DIR/RUN, the runs DIR/RUN.json and
  DIR/RUN-seed<k>.json of several training seeds (seed 0 first)."""
  if source.is_file():
    return [source]
  paths = sorted(source.parent.glob(f"{source.name}*.json"), key=lambda p: grids.seed_of(p.stem))
  paths = [p for p in paths if grids.seed_of(p.stem)[0] == source.name]
  if not paths:
    raise FileNotFoundError(f"{source}: no such file, nor runs {source}.json / "
                            f"{source}-seed<k>.json")
  return paths


def compare_files(before: pathlib.Path, after: pathlib.Path, seed_sd_from: str | None = None
                  ) -> str:
  """Before/after table of two eval.py outputs or run summaries (the demo; any two runs of one
  evaluation set), paired by query, over the datasets both were evaluated on. Either side may be
  DIR/RUN, a run trained on several seeds (`_seed_files`): the table then pairs their first
  seeds, and a second one pools every seed of each side (`seed_table`: seeds resampled, queries
  paired), the comparison of two configurations that a single seed cannot make.

  seed_sd_from: '<dir>/<run name>' of runs with several training seeds; the pair then also gets
  CIs widened by their seed sd (`seed_widened_table`)."""
  runs, groups = {}, {}
  for label, source in (("before", before), ("after", after)):
    paths = _seed_files(source)
    seeds = [grids.seed_of(p.stem)[1] for p in paths] if len(paths) > 1 else [0]
    groups[label] = [f"{label}-seed{k}" if k else label for k in seeds]
    runs.update({n: {"datasets": _datasets_of(p)} for n, p in zip(groups[label], paths)})
  first = {label: runs[names[0]] for label, names in groups.items()}
  shared = [d for d in first["before"]["datasets"]
            if all(d in r["datasets"] for r in runs.values())]
  if not shared:
    raise ValueError(f"{before} ({', '.join(first['before']['datasets']) or 'none'}) and {after} "
                     f"({', '.join(first['after']['datasets']) or 'none'}) share no LAReQA "
                     "evaluation set")
  out = []
  for dataset in shared:
    out += [comparison_table(first, dataset, "before"), ""]
    if seed_sd_from:
      out += [seed_widened_table(first, dataset, [("after", "before")], seed_sd_from), ""]
    if len(runs) > 2:
      out += [seed_table(runs, dataset, ["before"], groups), ""]
  return "\n".join(out)


def before_after(workdir: pathlib.Path) -> str:
  """The demo's table: the untrained model vs the newest evaluated checkpoint of `workdir`."""
  ev = workdir / "eval"
  steps = sorted(int(p.stem[5:]) for p in ev.glob("step_*.json"))
  if not (ev / "pretrained.json").exists() or not steps:
    raise FileNotFoundError(f"{ev} needs pretrained.json and a step_<N>.json (run the demo's "
                            "eval commands first)")
  after = ev / f"step_{steps[-1]}.json"
  ev_after = json.loads(after.read_text())
  evaluated = {l for d in lareqa_details(ev_after).values() for l in d["langs"]}
  uncovered = sorted(set(ev_after.get("uncovered_langs") or []) & evaluated)
  note = (f"\nNote: {ev_after['model']} was never trained on {', '.join(uncovered)}; those "
          "languages are unseen (see each run's per-language table in eval/*.md).\n"
          if uncovered else "")
  return (f"## Before (untrained) vs after {steps[-1]} steps of hybrid-batch training\n\n"
          + compare_files(ev / "pretrained.json", after) + note)


def find_results(experiment: str, results: str | None = None,
                 root: pathlib.Path = pathlib.Path(".")) -> list[pathlib.Path]:
  """The folders holding `experiment`'s run summaries.

  With `results`: `<results>/<experiment>` (or `results` itself when it is that folder). Without:
  every `results/<experiment>` and `results/*/<experiment>` under `root`. Raises
  FileNotFoundError listing what exists when nothing matches.
  """
  if results is not None:
    base = pathlib.Path(results)
    for d in (base / experiment, base):
      if d.name == experiment and d.is_dir() and any(d.glob("*.json")):
        return [d]
    found = sorted(str(p.parent.parent) for p in base.glob(f"*/{experiment}/*.json"))
    hint = (f"; {experiment} results are under --results {' or '.join(sorted(set(found)))}"
            if found else "")
    raise FileNotFoundError(f"no {experiment} run summaries (*.json) in {base / experiment}"
                            + hint)
  dirs = sorted({p.parent for pattern in (f"results/{experiment}/*.json",
                                          f"results/*/{experiment}/*.json")
                 for p in root.glob(pattern)})
  if not dirs:
    have = sorted({str(p.parent.relative_to(root)) for p in root.glob("results/**/*.json")})
    raise FileNotFoundError(
        f"no {experiment} run summaries under {(root / 'results').resolve()}/ "
        f"(looked for results/{experiment}/ and results/*/{experiment}/; folders with summaries: "
        f"{have or 'none'}). Run `python -m hybrid_ir.experiments {experiment} --results DIR` "
        "first, then pass the same --results DIR")
  return dirs


def _parser() -> argparse.ArgumentParser:
  doc = __doc__.split("\n\nStatistics.")[0]
  parser = argparse.ArgumentParser(prog="python -m hybrid_ir.report", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  p = sub.add_parser("compare", help="paired before/after table of two runs: hybrid_ir.eval "
                     "outputs or run summaries under results/")
  p.add_argument("before", type=pathlib.Path,
                 help="W/eval/<tag>.json or results/.../<run>.json (the baseline), or "
                 "results/.../<run>: that run on every seed it was trained on (<run>.json, "
                 "<run>-seed<k>.json), pooled")
  p.add_argument("after", type=pathlib.Path, help="the run compared (after - before), the same "
                 "ways")
  p.add_argument("--seed_sd_from", default=None, metavar="DIR/RUN",
                 help="runs trained on several seeds (e.g. results/e5_small/recipe_e5/strategies/"
                 "xquad-r-hybrid): the pair also gets CIs widened by their seed sd")
  p = sub.add_parser("before-after", help="the demo's table: W/eval/pretrained.json vs the newest "
                     "W/eval/step_<N>.json")
  p.add_argument("workdir", type=pathlib.Path)
  p = sub.add_parser("versus", help="the runs two result folders share, before vs after, paired "
                     "(e.g. results/before_identity_fix/use_m3/strategies results/use_m3/strategies)")
  p.add_argument("before", type=pathlib.Path, help="a folder of run summaries (*.json)")
  p.add_argument("after", type=pathlib.Path, help="the folder compared; versus.md is written here")
  for name in grids.EXPERIMENTS:
    p = sub.add_parser(name, help=f"report.md + plots of the {name} experiment")
    p.add_argument("--results", default=None, metavar="DIR",
                   help=f"the folder holding {name}/ (e.g. results/use_m3); default: every "
                   f"results/{name}/ and results/*/{name}/ under the current directory")
    p.add_argument("--seed_sd_from", default=None, metavar="DIR/RUN",
                   help="runs trained on several seeds (DIR/RUN.json, DIR/RUN-seed<k>.json, e.g. "
                   "results/e5_small/strategies/xquad-r-hybrid): one-seed comparisons also get "
                   "CIs widened by their seed sd")
  return parser


def main(argv: list[str]) -> None:
  """`argv` as sys.argv (program name first)."""
  args = _parser().parse_args(argv[1:])
  try:
    if args.command == "compare":
      print(compare_files(args.before, args.after, args.seed_sd_from))
    elif args.command == "before-after":
      print(before_after(args.workdir))
    elif args.command == "versus":
      print(write_versus(args.before, args.after))
    else:
      dirs = find_results(args.command, args.results)
      for d in dirs:
        if len(dirs) > 1:
          print(f"<!-- {d / 'report.md'} -->")
        print(write_report(args.command, d, args.seed_sd_from))
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main(sys.argv)
