"""The α sweep and the languages experiment, each run in miniature end to end (tiny random BERT,
two steps per run): every run of the grid reaches the report, in the grid's order, with its plots.
(A file of its own so that pytest-xdist runs it beside test_experiments.py.)"""
import json

import pytest

from hybrid_ir import experiments
from hybrid_ir import grids as grids_lib
from test_experiments import _run_grid, _table_rows


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
  out = {}
  for name in ("ratio", "languages"):
    tmp = tmp_path_factory.mktemp(name)
    out[name] = _run_grid(name, tmp, experiments.runs(name))
  # X-X-mono and hybrid with two training seeds each (what --seeds 0,1 runs).
  seeded = [r for r in grids_lib.with_seeds(experiments.runs("strategies", ("xquad-r",)), (0, 1))
            if "cross" not in r.name]
  out["seeds"] = _run_grid("strategies", tmp_path_factory.mktemp("seeds"), seeded)
  return out


def test_ratio_report_has_every_alpha_in_order_paired_against_mono(grids):
  text, out_dir = grids["ratio"]
  names = [r.name for r in experiments.runs("ratio")]
  # The metric and paired tables; the loss and parallel-query tables after them are checked below.
  rows = _table_rows(text.split("Mean InfoNCE loss per batch type")[0], "mlqa-r")
  assert rows[:len(names)] == names  # alpha0, alpha0.25, ..., alpha1, not string order
  assert "Paired against **alpha1**" in text  # alpha = 1: X-X-mono only
  assert rows[len(names):] == [n for n in names if n != "alpha1"]
  for png in ("alpha_mlqa-r.png", "loss_mlqa-r.png", "parallel_mlqa-r.png"):
    assert (out_dir / png).stat().st_size > 0
  # The convergence curve: parallel-query distance at every step of the 2-step miniature.
  summary = json.loads((out_dir / "alpha0.5.json").read_text())
  assert [r["step"] for r in summary["parallel_curve"]] == [1, 2]
  assert all(0 <= r["sq_dist"] <= 4 for r in summary["parallel_curve"])
  losses = text.split("Mean InfoNCE loss per batch type")[1].split("Squared distance")[0]
  assert [l.split("|")[1].strip() for l in losses.splitlines() if l.startswith("| alpha")] == [
      n for n in names if n.startswith("alpha")]
  assert "| run | mono batches | cross batches |" in losses
  table = text.split("Squared distance between the embeddings of parallel queries")[1]
  assert [l.split("|")[1].strip() for l in table.splitlines() if l.startswith("| alpha")] == [
      n for n in names if n.startswith("alpha")]


def test_languages_report_splits_seen_and_unseen_languages(grids):
  text, out_dir = grids["languages"]
  for run in experiments.runs("languages"):
    assert f"| {run.name} |" in text
  # langs1 trains on English only: of the miniature's eval languages (de, en, zh), en is seen.
  line = next(l for l in text.splitlines() if l.startswith("| langs1 | en |"))
  assert line.count("[") == 6  # seen and unseen Mo/Cr/Mul, each with its paired CI
  assert next(l for l in text.splitlines() if l.startswith("| langs4 | ar+de+en+zh |"))
  assert (out_dir / "languages_mlqa-r.png").stat().st_size > 0


def test_seed_grid_miniature_pools_seeds_in_the_report(grids):
  text, out_dir = grids["seeds"]
  assert (out_dir / "xquad-r-hybrid-seed1.json").is_file()
  assert "Across training seeds (mlqa-r)" in text
  for name in ("xquad-r-mono", "xquad-r-hybrid"):
    assert any(l.startswith(f"| {name} | 0,1 |") for l in text.splitlines()), text
  paired = [l for l in text.splitlines() if l.startswith("| xquad-r-hybrid |") and "p=" in l]
  assert paired and "±" not in paired[-1]  # the across-seeds comparison with mono


def test_languages_v2_miniature_reaches_the_scaling_report(tmp_path):
  # Hybrid at k = 2 and 11 (set 0, seed 0; two runs keep it short): the runner's own summaries
  # give one slope, and the report says what the rest of the grid lacks.
  grid = [r for r in experiments.runs("languages_v2", ("xquad-r",))[:6] if "-hybrid-" in r.name]
  text, out_dir = _run_grid("languages_v2", tmp_path, grid)
  for run in grid:
    summary = json.loads((out_dir / f"{run.name}.json").read_text())
    assert summary["args"]["temp"] == 0.02 and summary["args"]["pack"] == 1
    assert f"| {run.name} |" in text
  assert "| hybrid | 2 | 1 |" in text and "| hybrid | 11 | 1 |" in text
  assert "Partial grid: 23 of the 25 runs" in text
  assert "X-Y: 0 value(s) of k (none); no slope." in text
  mul = next(l for l in text.splitlines() if l.startswith("| Mul mAP |"))
  assert mul.count(" p=") == 1 and "(k=2,11)" in mul  # hybrid's slope alone
  assert (out_dir / "scaling_mlqa-r.png").stat().st_size > 0
