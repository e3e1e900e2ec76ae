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


def test_methods_grid_runs_every_method_per_seed_block_in_the_order_that_answers_first():
  from configs.experiments import base
  grid = experiments.runs("methods")
  names = [r.name for r in grid]
  methods = ["hybrid", "hybrid-distill", "mono-distill", "distill"]
  # Seed 0 of XQuAD-R -> MLQA-R first, whole: the untrained model and every method.
  assert names[:5] == ["xquad-r-pretrained"] + [f"xquad-r-{m}" for m in methods]
  assert names[5:9] == [f"xquad-r-{m}-seed1" for m in methods]
  assert names[9:14] == ["mlqa-r-pretrained"] + [f"mlqa-r-{m}" for m in methods]
  assert names[14:] == ([f"xquad-r-{m}-seed2" for m in methods]
                        + [f"mlqa-r-{m}-seed1" for m in methods])
  # 3 seeds on XQuAD-R, 2 on MLQA-R, each a run's config seed and input seed.
  seeds = {}
  for r in grid:
    if not r.pretrained:
      seeds.setdefault(r.args["train"], set()).add(r.args.get("seed", 0))
  assert seeds == {"xquad-r": {0, 1, 2}, "mlqa-r": {0, 1}}
  assert len(set(names)) == len(names) == 2 + 4 * 5
  # Every run: validation-selected and last checkpoints, LSAR, the recipe's temperature.
  for r in grid:
    assert (r.args["validation"], r.args["lsar"], r.args["temp"]) == (10, 4, 0.02), r.name
  by_name = {r.name: r for r in grid}
  for train in ("xquad-r", "mlqa-r"):
    mix = lambda n: tuple(by_name[f"{train}-{n}"].args[k] for k in ("mono", "cross"))
    assert mix("hybrid") == mix("hybrid-distill") == (0.5, 0.5) and mix("mono-distill") == (1, 0)
    assert "distill" not in by_name[f"{train}-hybrid"].args
    assert by_name[f"{train}-distill"].args["distill_only"] == 1
    for name in (f"{train}-{m}" for m in methods):
      config = base.get_config(by_name[name].config_arg(dict(model="e5-small", steps=300)))
      distill = config.loss.get("distill")
      assert (dict(distill) if distill else None) == (
          None if name.endswith("-hybrid") else
          dict(weight=10.0, only=name == f"{train}-distill", teacher="initial", pivot="en"))
      assert config.selection.metric == "validation/loss" and config.eval_every == 30
  # LSAR's rank stays below the training languages in every direction of both models.
  for model in grids_lib.MODELS:
    for r in grid:
      a = grids_lib.parse(r.config_arg(dict(model=model)))
      assert grids_lib.lsar_eval(a) == dict(rank=4, source=a["train"])
  # --directions xquad-r leaves MLQA-R out; the blocks keep their order.
  assert [r.name for r in experiments.runs("methods", ("xquad-r",))] == [
      n for n in names if n.startswith("xquad-r")]


def test_methods_args_are_checked_before_anything_trains():
  from configs.experiments import base
  with pytest.raises(ValueError, match="distill_only=1 needs distill=<weight> > 0"):
    base.get_config("size=mini,distill_only=1")
  with pytest.raises(ValueError, match=r"lsar=5: an LSAR rank must be below the number of "
                     r"training languages, 5 \(ar\+de\+en\+es\+zh of mlqa-r for use-m3\); at most 4"):
    base.get_config("size=mini,train=mlqa-r,lsar=5")
  assert grids_lib.lsar_eval(grids_lib.parse("lsar=0")) is None
  # The ratio sweep takes the distillation term from --set, every run alike.
  common = experiments.shared_args("use-m3", 150, 32, "full", ["distill=1"])
  assert common["distill"] == 1.0
  for run in experiments.runs("ratio"):
    assert base.get_config(run.config_arg(common)).loss.distill.weight == 1.0


def test_mined_points_the_training_source_at_a_mined_store_and_needs_negatives():
  from configs import common
  from configs.experiments import base
  c = base.get_config("size=mini,negatives=3,mined=xquad-r-0123abcd")
  source = c.input.sources[0]
  assert (source["store"], source["num_negatives"]) == (
      f"{common.STORE_DIR}/mined/xquad-r-0123abcd", 3)
  assert "store" not in base.get_config("size=mini,negatives=3").input.sources[0]
  for arg in ("mined=xquad-r-0123abcd", "negatives=3,mined=workdirs/mined/xquad-r-0123abcd"):
    with pytest.raises(ValueError, match=r"mined=.*: give the mined store's folder name "
                                         r"\(<name>-<key>, in <store_dir>/mined/\) and "
                                         r"negatives=<K> > 0"):
      base.get_config(f"size=mini,{arg}")
