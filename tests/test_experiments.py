"""Miniature experiments end to end (tiny random BERT, a few steps) and the report they produce."""
import json
import pathlib

import numpy as np
import pytest

from hybrid_ir import experiments
from hybrid_ir import grids
from hybrid_ir import report
from hybrid_ir.data import lareqa as lareqa_data

REPO = pathlib.Path(__file__).resolve().parents[1]

MINI = dict(model="use-m3", steps=2, batch=8, size="mini")


def _run_grid(name, tmp_path, runs):
  results, workdirs = tmp_path / "results", tmp_path / "w"
  for run in runs:
    experiments.execute(name, run, MINI, results, workdirs)
  return report.write_report(name, results / name), results / name


def _table_rows(markdown: str, dataset: str) -> list[str]:
  return [l.split("|")[1].strip() for l in markdown.splitlines()
          if l.startswith("| ") and not l.startswith(f"| run ({dataset})")]


def test_grids_have_the_runs_the_paper_needs():
  names = [r.name for r in experiments.runs("strategies")]
  assert names == ["xquad-r-pretrained", "xquad-r-mono", "xquad-r-cross", "xquad-r-hybrid",
                   "mlqa-r-pretrained", "mlqa-r-mono", "mlqa-r-cross", "mlqa-r-hybrid"]
  hybrid = next(r for r in experiments.runs("strategies") if r.name == "xquad-r-hybrid")
  assert (hybrid.args["mono"], hybrid.args["cross"], hybrid.args["mixed"]) == (0.5, 0.5, 0.0)
  ratio = {r.name: r.args for r in experiments.runs("ratio") if not r.pretrained}
  assert [a["mono"] for n, a in ratio.items() if n.startswith("alpha")] == [0, .25, .5, .75, 1]
  for a in ratio.values():
    assert a["mono"] + a["cross"] + a["mixed"] == pytest.approx(1.0)
  langs = {r.name: r.args for r in experiments.runs("languages")}
  assert langs["langs1"]["cross"] == 0.0  # one language cannot make X-Y batches
  with pytest.raises(ValueError, match="known: strategies, ratio, languages, recipe"):
    experiments.runs("alpha")


def test_strategies_miniature_end_to_end(tmp_path):
  grid = experiments.runs("strategies", directions=("xquad-r",))
  text, out_dir = _run_grid("strategies", tmp_path, grid)
  rows = _table_rows(text, "mlqa-r")
  for run in grid:
    assert run.name in rows, f"report lacks a row for {run.name}:\n{text}"
  # Every trained run is paired against the X-X-mono baseline.
  assert "Paired against **xquad-r-mono**" in text
  for name in ("xquad-r-cross", "xquad-r-hybrid", "xquad-r-pretrained"):
    assert rows.count(name) == 2  # once with its CIs, once in the paired table
  # The summaries are small and carry what the report needs, nothing from the training set.
  hybrid = json.loads((out_dir / "xquad-r-hybrid.json").read_text())
  assert list(hybrid["datasets"]) == ["mlqa-r"]
  assert [r["step"] for r in hybrid["loss_curve"]][-1] == MINI["steps"]
  assert (out_dir / "xquad-r-hybrid.json").stat().st_size < 400_000
  assert (out_dir / "loss_mlqa-r.png").stat().st_size > 0
  assert any(out_dir.glob("heatmap_mlqa-r_*.png"))
  # Workdirs are keyed by the shared settings, so another model never resumes from these.
  assert (tmp_path / "w" / "strategies" / "use-m3_2_8_mini" / "xquad-r-hybrid").is_dir()
  # A rerun skips finished runs and rebuilds the same report from the saved summaries.
  again, _ = _run_grid("strategies", tmp_path, grid)
  assert again == text


def test_a_saved_run_with_other_settings_is_an_error_not_a_skip(tmp_path):
  run = experiments.runs("ratio")[1]
  saved = tmp_path / "results" / "ratio" / f"{run.name}.json"
  saved.parent.mkdir(parents=True)
  saved.write_text(json.dumps({"args": {**MINI, **run.args, "model": "e5-small"}}))
  with pytest.raises(ValueError, match=r"alpha0.json holds run alpha0 with other settings .*"
                                       r"'model': \('e5-small', 'use-m3'\)"):
    experiments.execute("ratio", run, MINI, tmp_path / "results", tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_a_run_whose_training_stopped_early_gets_no_summary(tmp_path, monkeypatch):
  # The trainer exits 0 after a SIGTERM with a checkpoint short of total_steps; stand in for
  # that with the real trainer stopping after 1 of the run's 2 steps.
  real = experiments.run_trainer
  monkeypatch.setattr(experiments, "run_trainer", lambda spec, workdir, name: real(
      spec, workdir, name, overrides=("--config.total_steps=1",)))
  run = experiments.runs("strategies")[3]  # xquad-r-hybrid
  with pytest.raises(experiments.Interrupted, match=r"xquad-r-hybrid: training stopped at step 1 "
                                                     r"of 2 .*Rerun the same command to resume"):
    experiments.execute("strategies", run, MINI, tmp_path / "results", tmp_path / "w")
  assert not (tmp_path / "results" / "strategies" / "xquad-r-hybrid.json").exists()


def test_a_trainer_that_fails_is_an_error_naming_the_run_and_its_command(tmp_path):
  run = experiments.runs("strategies")[3]  # xquad-r-hybrid
  spec = f"{experiments.find_config()}:{run.config_arg(MINI)}"
  with pytest.raises(experiments.TrainerFailed,
                     match=r"xquad-r-hybrid: the trainer exited with 2 \(its error is above\): "
                           r".*hybrid_ir.train --config .*--config.no_such_key=1"):
    experiments.run_trainer(spec, tmp_path / "w", run.name, overrides=("--config.no_such_key=1",))


@pytest.mark.slow
def test_strategies_both_directions_miniature_has_every_row(tmp_path):
  grid = experiments.runs("strategies")
  text, _ = _run_grid("strategies", tmp_path, grid)
  rows = _table_rows(text, "xquad-r") + _table_rows(text, "mlqa-r")
  for run in grid:
    assert run.name in rows, f"report lacks {run.name}"


def _fake_summary(values_by_lang: dict[str, np.ndarray], name: str) -> dict:
  langs = list(values_by_lang)
  lang = [l for l in langs for _ in values_by_lang[l]]
  v = np.concatenate(list(values_by_lang.values()))
  per_lang = {l: float(values_by_lang[l].mean()) for l in langs}
  macro = float(np.mean(list(per_lang.values())))
  metrics = {k: macro for k in ("mo_map", "cr_map", "mul_map", "mo_r1", "cr_r1", "mul_r10")}
  metrics["rank_distance"] = 10 * macro
  return {"run": name, "datasets": {"toy": {
      "dataset": "toy", "langs": langs, "metrics": metrics,
      "languages": {l: {"mo_map": per_lang[l], "cr_map": per_lang[l], "mul_map": per_lang[l]}
                    for l in langs},
      "matrix_map": [[per_lang[l]] * len(langs) for l in langs],
      "per_query": {"lang": lang, "mo_map": v.tolist(), "cr_map": v.tolist(),
                    "mul_map": v.tolist(), "rank_distance": (10 * v).tolist()}}}}


def test_comparison_table_ci_and_paired_test_on_known_runs():
  # Baseline: AP 0.5 everywhere. Better run: +0.2 on every 'de' query, +0 on 'en' (3x larger).
  # Macro difference = (0 + 0.2) / 2 = 0.1, constant within each language, so the stratified
  # bootstrap CI collapses to [+0.100, +0.100] and the sign-flip p-value is tiny.
  base = _fake_summary({"en": np.full(300, 0.5), "de": np.full(100, 0.5)}, "base")
  better = _fake_summary({"en": np.full(300, 0.5), "de": np.full(100, 0.7)}, "better")
  text = report.comparison_table({"base": base, "better": better}, "toy", "base")
  line = next(l for l in text.splitlines() if l.startswith("| better |") and "Δ" not in l
              and "p=" in l)
  assert "+0.100 [+0.100, +0.100] p=0.0005" in line  # (1 + 0) / (1 + 2000)
  assert "+1.0 [+1.0, +1.0]" in line  # rank distance = 10 x AP here
  row = next(l for l in text.splitlines() if l.startswith("| better |") and "p=" not in l)
  assert "0.600 [0.600, 0.600]" in row  # its own macro mean (0.5 + 0.7) / 2 with its CI


def test_report_compare_pairs_two_run_summaries_and_names_what_it_cannot_read(tmp_path, capsys):
  # Any two runs under results/ (e.g. hybrid against X-Y of one direction), paired by query.
  base = _fake_summary({"en": np.full(30, 0.5), "de": np.full(10, 0.5)}, "base")
  better = _fake_summary({"en": np.full(30, 0.5), "de": np.full(10, 0.7)}, "better")
  for name, run in (("base", base), ("better", better)):
    (tmp_path / f"{name}.json").write_text(json.dumps(run))
  text = _main(capsys, "compare", str(tmp_path / "base.json"), str(tmp_path / "better.json"))
  assert "Paired against **before**" in text
  paired = next(l for l in text.splitlines() if l.startswith("| after |") and "p=" in l)
  assert paired.count("+0.100 [+0.100, +0.100]") == 3  # Mo, Cr, Mul: macro (0 + .2) / 2
  # With the seed sd of a run trained twice (macro .50 and .55: sd .0354), the pair's CI widens
  # from the queries' zero width to +-1.96 sqrt(2) sd = +-.098 (Var = Var over queries + 2 sd^2).
  seeds = tmp_path / "seeds"
  seeds.mkdir()
  for name, en in (("r", 0.5), ("r-seed1", 0.6)):
    run = _fake_summary({"en": np.full(30, en), "de": np.full(10, 0.5)}, name)
    (seeds / f"{name}.json").write_text(json.dumps(run))
  widened = _main(capsys, "compare", str(tmp_path / "base.json"), str(tmp_path / "better.json"),
                  "--seed_sd_from", str(seeds / "r"))
  assert widened.startswith(text.rstrip("\n"))
  assert "widened by the training-seed sd of" in widened
  row = next(l for l in widened.splitlines() if l.startswith("| after (vs before) |"))
  assert row.count("+0.100 [+0.002, +0.198]") == 3
  other = {**better, "datasets": {"other": better["datasets"]["toy"]}}
  (tmp_path / "other.json").write_text(json.dumps(other))
  with pytest.raises(SystemExit, match=r"base.json \(toy\) and .*other.json \(other\) share "
                                       r"no LAReQA evaluation set"):
    report.main(["report", "compare", str(tmp_path / "base.json"), str(tmp_path / "other.json")])
  (tmp_path / "config.json").write_text(json.dumps({"steps": 3}))
  with pytest.raises(SystemExit, match=r"config.json: neither a hybrid_ir.eval output"):
    report.main(["report", "compare", str(tmp_path / "base.json"), str(tmp_path / "config.json")])


def test_report_compare_pools_the_seeds_of_two_configurations(tmp_path, capsys):
  # Two configurations trained on seeds 0, 1, 2 (DIR/RUN names them all): AP .50 / .55 plus the
  # same seed offsets (0, +.02, -.02). The first table pairs their seed-0 runs (+.050, a CI of
  # zero width), the pooled one the means over seeds (+.050, a CI as wide as the seed spread).
  for name, level in (("base", 0.5), ("new", 0.55)):
    for seed, off in enumerate((0.0, 0.02, -0.02)):
      run = f"{name}-seed{seed}" if seed else name
      summary = _trained(_fake_summary({"en": np.full(30, level + off),
                                        "de": np.full(10, level + off)}, run))
      (tmp_path / f"{run}.json").write_text(json.dumps(summary))
  text = _main(capsys, "compare", str(tmp_path / "base"), str(tmp_path / "new"))
  paired = next(l for l in text.splitlines() if l.startswith("| after |") and "p=" in l)
  assert paired.count("+0.050 [+0.050, +0.050]") == 3
  assert "| before | 0,1,2 | 0.500 ± 0.020" in text
  pooled = text.split("Against **before** across seeds")[1]
  delta = next(l for l in pooled.splitlines() if l.startswith("| after |")).split("|")[2].strip()
  low, high = (float(x) for x in delta.split("[")[1].split("]")[0].split(","))
  assert delta.startswith("+0.050 [") and 0 < low < 0.05 < high and high - low > 0.02
  # One side a single file: its one run against the other's three seeds.
  text = _main(capsys, "compare", str(tmp_path / "base.json"), str(tmp_path / "new"))
  assert "| before | 0 |" in text and "| after | 0,1,2 |" in text
  with pytest.raises(SystemExit, match=r"nope: no such file, nor runs .*nope.json"):
    report.main(["report", "compare", str(tmp_path / "base"), str(tmp_path / "nope")])


def test_report_keeps_only_the_heatmap_it_references(tmp_path):
  runs = tmp_path / "strategies"
  _write_runs(runs)
  for name in ("xquad-r-mono", "xquad-r-hybrid"):  # trained runs: they have a loss curve
    summary = json.loads((runs / f"{name}.json").read_text())
    summary["loss_curve"] = [{"step": s, "train/loss_mono": 1.0 / s} for s in (1, 2)]
    (runs / f"{name}.json").write_text(json.dumps(summary))
  (runs / "heatmap_toy_xquad-r-old.png").write_bytes(b"from an earlier report")
  (runs / "heatmap_other_xquad-r-mono.png").write_bytes(b"another evaluation set's")
  text = report.write_report("strategies", runs)
  assert "![heatmap](heatmap_toy_xquad-r-hybrid.png)" in text  # the best Cr of the two
  assert sorted(p.name for p in runs.glob("heatmap_*.png")) == [
      "heatmap_other_xquad-r-mono.png", "heatmap_toy_xquad-r-hybrid.png"]


def test_loss_table_averages_each_batch_type_over_its_first_and_last_fifth():
  # mono logged at 10 steps: its first fifth is steps 1-2, its last steps 9-10.
  curve = [{"step": s, "train/loss": 9.0, "train/loss_mono": 10.0 - s} for s in range(1, 11)]
  for r in curve[::2]:
    r["train/loss_cross"] = 2.0 * r["step"]  # 5 windows (odd steps): step 1, then step 9
  mono_only = [{"step": s, "train/loss_mono": 1.0} for s in (1, 5, 10)]
  rows = report.loss_table({"a": {"loss_curve": curve}, "b": {"loss_curve": mono_only}})
  lines = rows.splitlines()
  assert lines[2] == "| run | mono batches | cross batches |"
  assert lines[4] == "| a | 8.500 → 0.500 | 2.000 → 18.000 |"
  assert lines[5] == "| b | 1.000 → 1.000 | — |"


def test_seen_unseen_table_groups_by_query_language_with_paired_gains():
  # Untrained: AP .5 everywhere. Trained on en only: en +.2, de +.1 (3 en queries per de query).
  base = _fake_summary({"en": np.full(300, 0.5), "de": np.full(100, 0.5)}, "pretrained")
  run = _fake_summary({"en": np.full(300, 0.7), "de": np.full(100, 0.6)}, "langs1")
  run["train_langs"] = ["en"]
  run["uncovered_langs"] = ["de", "hi"]
  text = report.seen_unseen_table({"pretrained": base, "langs1": run}, "toy", "pretrained")
  line = next(l for l in text.splitlines() if l.startswith("| langs1 |"))
  cells = [c.strip() for c in line.split("|")[1:-1]]
  assert cells[:2] == ["langs1", "en"]
  assert cells[2:5] == ["0.700 (+0.200 [+0.200, +0.200])"] * 3  # seen: en
  assert cells[5:8] == ["0.600 (+0.100 [+0.100, +0.100])"] * 3  # unseen: de
  assert "| pretrained | none | — | — | — | 0.500 | 0.500 | 0.500 |" in text
  assert "does not cover (always unseen): de." in text  # hi is not in this dataset


@pytest.mark.parametrize("langs", [("de", "en", "vi", "zh"), None])
def test_per_query_vectors_macro_average_to_the_reported_metrics(shared_data, langs):
  """On MLQA-R (questions in 2-4 languages, so X->Y settings have unequal sizes), each per-query
  vector's macro average over query languages reproduces the evaluator's figure exactly."""
  from hybrid_ir.data import lareqa as lareqa_data
  from hybrid_ir.evaluators import lareqa, stats
  data = lareqa_data.load_lareqa(shared_data, "mlqa-r", langs)
  rng = np.random.default_rng(0)
  # Embeddings that make the relevant sentence findable but not always first.
  ids = sorted(set(data.question_ids))
  topic = {i: rng.normal(size=32) for i in ids}
  q = np.stack([topic[i] + rng.normal(size=32) for i in data.question_ids])
  cand_topic = np.full(data.num_candidates, -1)
  for row, rel in zip(data.relevant_by_lang, data.question_ids):
    for c in row[row >= 0]:
      cand_topic[c] = ids.index(rel)
  c = np.stack([topic[ids[t]] + rng.normal(size=32) if t >= 0 else rng.normal(size=32) * 1.4
                for t in cand_topic])
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  c /= np.linalg.norm(c, axis=1, keepdims=True)
  result = lareqa.evaluate_embeddings(data, q.astype(np.float32), c.astype(np.float32))
  vectors = report.per_query(result.to_json())
  metrics = result.metrics()
  for k in ("mo_map", "cr_map", "mul_map", "rank_distance"):
    assert stats.macro_mean(vectors[k], vectors["lang"]) == pytest.approx(metrics[k], rel=1e-9), k


def test_grid_models_are_the_registry_presets_and_all_means_the_covered_languages():
  assert grids.parse("model=e5-small")["model"] == "e5-small"
  with pytest.raises(ValueError, match=r"model='xlmr'; known: \('e5-small', 'use-m3'\)"):
    grids.parse("model=xlmr")
  # What 'all' means is decided in the library, so the report needs no config file.
  assert "el" not in grids.train_langs(grids.parse("model=use-m3,langs=all"))
  assert len(grids.train_langs(grids.parse("model=e5-small,langs=all"))) == 11


def _write_runs(directory: pathlib.Path, names=("xquad-r-mono", "xquad-r-hybrid")) -> None:
  directory.mkdir(parents=True)
  for i, name in enumerate(names):
    summary = _fake_summary({"en": np.full(30, 0.5 + 0.1 * i), "de": np.full(10, 0.5)}, name)
    (directory / f"{name}.json").write_text(json.dumps(summary))


def _main(capsys, *argv) -> str:
  report.main(["report", *argv])
  return capsys.readouterr().out


def test_report_cli_help_results_spellings_and_default_search(tmp_path, monkeypatch, capsys):
  with pytest.raises(SystemExit) as e:
    report.main(["report", "--help"])
  assert e.value.code == 0
  usage = capsys.readouterr().out
  for command in ("compare", "before-after", "strategies", "ratio", "languages"):
    assert command in usage
  _write_runs(tmp_path / "results" / "use_m3" / "strategies")
  spaced = _main(capsys, "strategies", "--results", str(tmp_path / "results" / "use_m3"))
  assert "Paired against **xquad-r-mono**" in spaced
  assert _main(capsys, "strategies", f"--results={tmp_path / 'results' / 'use_m3'}") == spaced
  # Without --results: the one results/*/strategies/ under the current directory.
  monkeypatch.chdir(tmp_path)
  assert _main(capsys, "strategies") == spaced
  # Two of them: both are reported, each under its path.
  _write_runs(tmp_path / "results" / "e5_small" / "strategies")
  both = _main(capsys, "strategies")
  assert both.count("# Experiment: strategies") == 2
  assert "<!-- results/e5_small/strategies/report.md -->" in both
  # A --results one level too high names the folders that hold the experiment.
  with pytest.raises(SystemExit, match=r"no strategies run summaries .* in results/strategies; "
                                       r"strategies results are under --results "
                                       r"results/e5_small or results/use_m3"):
    report.main(["report", "strategies", "--results", "results"])
  with pytest.raises(SystemExit, match=r"no ratio run summaries .*folders with summaries: "
                                       r"\['results/e5_small/strategies', "
                                       r"'results/use_m3/strategies'\]"):
    report.main(["report", "ratio"])


def test_experiment_config_is_found_from_another_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  # An editable install (this checkout) finds the config next to the package.
  assert experiments.find_config() == REPO / experiments.CONFIG
  with pytest.raises(FileNotFoundError, match="--base_config=nope.py: no such file"):
    experiments.find_config("nope.py")


def _trained(summary: dict) -> dict:
  return dict(summary, loss_curve=[{"step": 1, "loss": 1.0}])


def test_seed_table_on_runs_whose_answer_is_known():
  # X-X-mono: AP .5 + a seed offset (0, +.02, -.02) on every query; hybrid: .55 + the same
  # offsets. Mean over seeds .500 and .550, sd .020; hybrid - mono = +.050, far above the seed
  # spread, so its two-level CI excludes 0.
  runs = {}
  for s, off in enumerate((0.0, 0.02, -0.02)):
    for name, level in (("mono", 0.5), ("hybrid", 0.55)):
      runs[name if s == 0 else f"{name}-seed{s}"] = _trained(_fake_summary(
          {"en": np.full(300, level + off), "de": np.full(100, level + off)}, name))
  text = report.seed_table(runs, "toy", ["mono"])
  mono = next(l for l in text.splitlines() if l.startswith("| mono | 0,1,2 |"))
  assert "0.500 ± 0.020" in mono
  hybrid = next(l for l in text.splitlines() if l.startswith("| hybrid |") and "p=" in l)
  delta = hybrid.split("|")[2].strip()  # Δ Mo mAP
  assert delta.startswith("+0.050 [")
  low, high = (float(x) for x in delta.split("[")[1].split("]")[0].split(","))
  assert 0 < low < 0.05 < high < 0.1
  # The seed level counts: with 3 seeds of sd .02, the CI is far wider than the query CI (0).
  assert high - low > 0.02
  # Several baselines: one block each, the other runs against it.
  runs.update({n.replace("mono", "cross"): r for n, r in runs.items() if n.startswith("mono")})
  text = report.seed_table(runs, "toy", ["mono", "cross"])
  assert "Against **mono**" in text and "Against **cross**" in text
  block = text.split("Against **cross**")[1]
  assert "| mono |" in block and "| cross |" not in block
  hybrid = next(l for l in block.splitlines() if l.startswith("| hybrid |"))
  assert hybrid.split("|")[2].strip().startswith("+0.050 [")


def test_versus_table_pairs_the_runs_two_folders_share():
  before = {"mono": _trained(_fake_summary({"en": np.full(50, 0.5)}, "mono")),
            "pretrained": _fake_summary({"en": np.full(50, 0.4)}, "pretrained")}
  after = {"mono": _trained(_fake_summary({"en": np.full(50, 0.53)}, "mono")),
           "pretrained": before["pretrained"]}
  text = report.versus_table(before, after, "toy")
  line = next(l for l in text.splitlines() if l.startswith("| mono |"))
  assert "0.500 → 0.530, +0.030 [+0.030, +0.030]" in line
  assert "| pretrained |" not in text  # untrained runs are the same model on both sides


def test_recipe_grid_adds_one_ingredient_per_row_and_every_config_builds():
  from configs.experiments import base
  recipe = [r for r in experiments.runs("recipe") if not r.pretrained]
  assert [r.name for r in recipe] == [f"recipe{i}-{n}" for i, (n, _) in enumerate(grids.RECIPE, 1)]
  for prev, run in zip(recipe, recipe[1:]):
    changed = {k for k in run.args if run.args[k] != prev.args.get(k)}
    assert len(changed) == 1, (run.name, changed)  # the ablation changes one thing per row
  arg = lambda run: ",".join(f"{k}={v}" for k, v in dict(run.args, **MINI).items())  # noqa: E731
  last = base.get_config(arg(recipe[-1]))
  assert last.input.sources[0]["num_negatives"] == 3
  assert [s["name"] for s in last.input.sources] == ["xquad-r", "lohelp", "bible"]
  assert last.loss.symmetric and last.loss.learn_temperature
  assert base.get_config(arg(recipe[-1]) + ",temp_lr=0.01").loss.temperature_lr == 0.01
  first = base.get_config(arg(recipe[0]))
  assert not first.loss.symmetric and len(first.input.sources) == 1
  assert first.loss.temperature_lr == 0.0  # 0: the encoder's learning rate
  with pytest.raises(ValueError, match="'wiki' is not one of"):
    base.get_config("bitext=wiki")


def test_ingredients_grid_changes_one_thing_against_the_base_and_every_config_builds():
  from configs.experiments import base
  grid = {r.name: r for r in experiments.runs("ingredients")}
  assert list(grid)[:2] == ["pretrained", "base"] and grid["pretrained"].pretrained
  assert list(grid)[2:] == [n for n, _ in grids.INGREDIENTS]
  # A run's own args win over the shared ones, as in experiments.execute (steps300's steps).
  arg = lambda run: ",".join(f"{k}={v}" for k, v in dict(MINI, **run.args).items())  # noqa: E731
  base_config = base.get_config(arg(grid["base"])).to_dict()
  for name, change in grids.INGREDIENTS:
    run = grid[name]
    assert {k for k in run.args if run.args[k] != grid["base"].args.get(k)} == set(change)
    config = base.get_config(arg(run)).to_dict()
    assert config != base_config, name  # the ingredient reaches the config
  assert base.get_config(arg(grid["lr1e-4"])).optimizer.lr == 1e-4
  assert base.get_config(arg(grid["temp0.02"])).loss.temperature == 0.02
  assert report.BASELINES["ingredients"] == "base"


def test_ablation_table_pairs_each_row_with_the_one_before():
  runs = {name: dict(_trained(_fake_summary({"en": np.full(40, ap)}, name)), wall_seconds=120)
          for name, ap in (("recipe1-base", 0.5), ("recipe2-negatives", 0.54),
                           ("recipe3-bitext", 0.53))}
  runs["recipe2-negatives-seed1"] = runs["recipe2-negatives"]  # other seeds: not in the chain
  text = report.ablation_table(runs, "toy")
  rows = [l for l in text.splitlines() if l.startswith("| recipe")]
  assert [r.split("|")[1].strip() for r in rows] == [
      "recipe2-negatives (vs recipe1-base)", "recipe3-bitext (vs recipe2-negatives)"]
  assert rows[0].split("|")[2].strip().startswith("+0.040 [")
  assert rows[1].split("|")[2].strip().startswith("-0.010 [")
  assert rows[0].rstrip().endswith("| 2 min |")


def test_table_grid_trains_the_same_run_with_each_table_update():
  from configs.experiments import base
  trained = [r for r in experiments.runs("table") if not r.pretrained]
  assert [r.name for r in trained] == ["table-dense", "table-lazy", "table-frozen"]
  arg = lambda run: ",".join(f"{k}={v}" for k, v in dict(run.args, **MINI).items())  # noqa: E731
  configs = [base.get_config(arg(r)) for r in trained]
  assert [c.optimizer.embedding_update for c in configs] == ["dense", "lazy", "frozen"]
  for c in configs[1:]:  # nothing else differs
    a, b = c.to_dict(), configs[0].to_dict()
    a["optimizer"].pop("embedding_update"), b["optimizer"].pop("embedding_update")
    assert a == b
  assert report.BASELINES["table"] == "table-dense"


def test_set_gives_every_run_checked_typed_args():
  common = experiments.shared_args("e5-small", 300, 32, "full", ["negatives=3", "table=lazy"])
  assert common == dict(model="e5-small", steps=300, batch=32, size="full", negatives=3,
                        table="lazy")
  run = next(r for r in experiments.runs("strategies") if r.name == "xquad-r-mono")
  arg = run.config_arg(common)
  assert "negatives=3" in arg and "table=lazy" in arg and "mono=1.0" in arg
  with pytest.raises(ValueError, match="negativs=3"):
    experiments.shared_args("e5-small", 300, 32, "full", ["negativs=3"])
  with pytest.raises(ValueError, match=r"--set \['steps'\]: set by their own flags"):
    experiments.shared_args("e5-small", 300, 32, "full", ["steps=10"])


def test_seed_widened_table_borrows_the_seed_sd_of_other_runs(tmp_path):
  # Seed runs of the base: AP .5 + (0, +.02, -.02) on every query, sd .020. The one-seed
  # ingredient is +.030 on every query: its query-only CI is [+.030, +.030]; widened by
  # sqrt(2) x .020 x 1.96 = .055 it is [-.025, +.085] and no longer excludes 0.
  seeds = tmp_path / "strategies"
  seeds.mkdir()
  for s, off in enumerate((0.0, 0.02, -0.02)):
    name = "hybrid" if s == 0 else f"hybrid-seed{s}"
    (seeds / f"{name}.json").write_text(json.dumps(_trained(_fake_summary(
        {"en": np.full(60, 0.5 + off), "de": np.full(40, 0.5 + off)}, name))))
  runs = {n: _trained(_fake_summary({"en": np.full(60, ap), "de": np.full(40, ap)}, n))
          for n, ap in (("base", 0.5), ("lr1e-4", 0.53))}
  sd, n_seeds = report.seed_sd_of(str(seeds / "hybrid"), "toy")
  assert n_seeds == 3 and sd["mo_map"] == pytest.approx(0.02)
  pairs = report._one_seed_pairs(runs, "ingredients", "base")
  assert pairs == [("lr1e-4", "base")]
  text = report.seed_widened_table(runs, "toy", pairs, str(seeds / "hybrid"))
  row = next(l for l in text.splitlines() if l.startswith("| lr1e-4 (vs base) |"))
  assert row.split("|")[2].strip().startswith("+0.030 [-0.025, +0.085] p=0.28")
  # The recipe's rows are each paired with the row before.
  assert report._one_seed_pairs({"recipe2-b": runs["base"], "recipe1-a": runs["base"],
                                 "recipe3-c": runs["base"]}, "recipe", None) == [
      ("recipe2-b", "recipe1-a"), ("recipe3-c", "recipe2-b")]
  (seeds / "hybrid-seed1.json").unlink(), (seeds / "hybrid-seed2.json").unlink()
  with pytest.raises(ValueError, match="1 seed"):
    report.seed_sd_of(str(seeds / "hybrid"), "toy")


def test_language_sets_keep_english_are_deterministic_and_differ():
  xquad = lareqa_data.LANGS["xquad-r"]
  for train, ks in grids.SCALING_KS.items():
    available = lareqa_data.LANGS[train]
    for k in ks:
      sets = grids.language_sets(available, k)
      assert sets == grids.language_sets(available, k)  # a pure function of its inputs
      assert len(sets) == (1 if k == len(available) else 2)
      for s in sets:
        assert len(s) == k and len(set(s)) == k and "en" in s
        assert list(s) == [l for l in available if l in s]  # in the training set's order
      if len(sets) == 2:
        assert sets[0] != sets[1]
        if 2 * (k - 1) <= len(available) - 1:
          assert set(sets[0]) & set(sets[1]) == {"en"}
  # The written-down rule: the other languages ordered by SHA-256 of "<seed>:<k>:<lang>".
  import hashlib
  order = sorted((l for l in xquad if l != "en"),
                 key=lambda l: hashlib.sha256(f"0:4:{l}".encode()).hexdigest())
  assert grids.language_sets(xquad, 4) == (
      tuple(l for l in xquad if l == "en" or l in order[:3]),
      tuple(l for l in xquad if l == "en" or l in order[-3:]))
  assert grids.language_sets(xquad, 4, seed=1) != grids.language_sets(xquad, 4)
  with pytest.raises(ValueError, match="k=1: a language set holds 2 to 11"):
    grids.language_sets(xquad, 1)
  with pytest.raises(ValueError, match="keep 'en'"):
    grids.language_sets(("de", "zh"), 2)


def test_languages_v2_grid_runs_in_the_order_that_answers_most_when_stopped():
  from configs.experiments import base
  grid = experiments.runs("languages_v2", ("xquad-r",))
  assert len(grid) == 3 * 8 + 1 and len({r.name for r in grid}) == len(grid)
  cells = [(grids.train_langs(grids.parse(r.config_arg({})))) for r in grid]
  ks = [len(langs) for langs in cells]
  seeds = [r.args.get("seed", 0) for r in grid]
  # Every strategy at k = 2 and 11 (set 0, seed 0), then the middle sizes, then the second
  # language sets, then the second seed at k = 11, then hybrid at k = 11 with twice the steps.
  assert ks == [2] * 3 + [11] * 3 + [4] * 3 + [7] * 3 + [2] * 3 + [4] * 3 + [7] * 3 + [11] * 4
  assert [r.name.split("-")[2] for r in grid[:24]] == ["mono", "cross", "hybrid"] * 8
  assert seeds == [0] * 21 + [1] * 3 + [0]
  assert [r.name for r in grid[:3]] == [f"xquad-r-{s}-k2-set0" for s in ("mono", "cross", "hybrid")]
  assert grid[12].name == "xquad-r-mono-k2-set1" and grid[21].name == "xquad-r-mono-k11-seed1"
  assert grid[-1].name == "xquad-r-hybrid-k11-steps600"
  assert grid[-1].args["steps"] == 2 * grids.SCALING_STEPS == 600
  assert all("steps" not in r.args for r in grid[:-1])  # one budget (the runner's --steps)
  for r in grid:
    s = r.name.split("-")[2]
    assert (r.args["mono"], r.args["cross"], r.args["mixed"]) == grids.STRATEGIES[s]
  # Each size's two language sets are language_sets' two; both seeds at k = 11 train on all 11.
  for k in (2, 4, 7):
    assert {c for c, n in zip(cells, ks) if n == k} == set(
        grids.language_sets(lareqa_data.LANGS["xquad-r"], k))
  # The recipe's temperature and packing, no bitext: the training languages are the set alone.
  for r in grid:
    config = base.get_config(r.config_arg(dict(model="e5-small", steps=300, batch=32)))
    assert config.loss.temperature == 0.02 and config.input.packing
    assert [s["name"] for s in config.input.sources] == ["xquad-r"]
    assert tuple(config.input.sources[0]["langs"]) == grids.train_langs(
        grids.parse(r.config_arg({})))
    assert config.evals.to_dict().keys() == {"mlqa-r"}
    assert config.checkpoint.every == 50  # a killed run resumes from its last 50-step mark
  # The other direction is optional, after the whole XQuAD-R grid: k = 2, 4, 7 on one seed.
  both = experiments.runs("languages_v2")
  assert both[:len(grid)] == grid
  other = both[len(grid):]
  assert {r.args["train"] for r in other} == {"mlqa-r"} and len(other) == 3 * 5
  assert [r.name for r in other[3:6]] == [f"mlqa-r-{s}-k7" for s in ("mono", "cross", "hybrid")]
  assert all(r.args.get("seed", 0) == 0 for r in other)


def test_validation_holds_a_fold_of_the_training_set_out_and_off_changes_nothing():
  from configs.experiments import base
  plain, config = base.get_config("size=mini,steps=8"), base.get_config(
      "size=mini,steps=8,validation=4")
  source = config.input.sources[0]
  assert "split" not in plain.input.sources[0] and plain.eval_every == 0 and "selection" not in plain
  assert (source["split"], source["num_folds"], source["fold"]) == ("train", 5, 0)
  v = config.evals.validation
  # The evaluator's texts are the training source's held-out fold, never the evaluation set's.
  assert v.type == "validation" and dict(v.source) == dict(source)
  assert source["path"].endswith("xquad-r") and "xquad-r" not in config.evals
  assert (v.batch_size, v.temperature) == (config.input.batch_size, config.loss.temperature)
  assert (config.eval_every, list(config.train_evals), config.checkpoint.every) == (2, ["validation"], 2)
  assert dict(config.selection) == {"metric": "validation/loss", "mode": "min"}
  both = base.get_config("size=mini,steps=20,validation=2,curve=10")
  assert (both.eval_every, list(both.train_evals)) == (2, ["parallel", "validation"])


def test_a_validated_run_reports_its_best_and_its_last_checkpoint(tmp_path, monkeypatch):
  from hybrid_ir import run_dir
  from hybrid_ir import selection
  real = experiments.load_config

  def keep_one_latest(path, arg):
    # The latest one checkpoint only: the best step survives through the manager's keep_best.
    config = real(path, arg)
    config.checkpoint.keep = 1
    return config

  monkeypatch.setattr(experiments, "load_config", keep_one_latest)
  real_trainer = experiments.run_trainer  # ... and the trainer's config, in its own process
  monkeypatch.setattr(experiments, "run_trainer", lambda spec, workdir, name: real_trainer(
      spec, workdir, name, overrides=("--config.checkpoint.keep=1",)))
  run = grids.Run("xquad-r-hybrid", dict(train="xquad-r", mono=0.5, cross=0.5, validation=2))
  common = dict(MINI, steps=4)
  out = experiments.execute("strategies", run, common, tmp_path / "results", tmp_path / "w")
  summary = json.loads(out.read_text())
  workdir = tmp_path / "w" / "strategies" / "use-m3_4_8_mini" / "xquad-r-hybrid"
  rows = run_dir.read_metrics(workdir)
  best = selection.best_step(rows, "validation/loss")
  sel = summary["selection"]
  assert (sel["step"], sel["metric"], sel["mode"], sel["last_step"]) == (
      best.step, "validation/loss", "min", 4)
  assert sel["value"] == best.value and [s for s, _ in sel["curve"]] == [2, 4]
  assert [r["step"] for r in summary["validation_curve"]] == [2, 4]
  assert {"validation/loss", "validation/mo_map", "validation/loss_cross"} <= set(
      summary["validation_curve"][0])
  # Both checkpoints evaluated on the evaluation set: the best under `best`, the last as the
  # summary's own results (what the report tables read); the validation results stay out of them.
  assert summary["tag"] == "step_4" and summary["best"]["tag"] == f"step_{best.step}"
  assert list(summary["datasets"]) == ["mlqa-r"] and list(summary["best"]["datasets"]) == ["mlqa-r"]
  for tag, datasets in (("step_4", summary["datasets"]),
                        (f"step_{best.step}", summary["best"]["datasets"])):
    ev = json.loads((workdir / "eval" / f"{tag}.json").read_text())
    assert datasets["mlqa-r"]["metrics"] == ev["details"]["mlqa-r"]["metrics"]
    assert ev["types"]["validation"] == "validation"
  report.write_report("strategies", tmp_path / "results" / "strategies")


def test_a_best_step_without_a_checkpoint_is_named(tmp_path):
  from configs.experiments import base
  from hybrid_ir import run_dir
  config = base.get_config("size=mini,steps=4,validation=2")
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / run_dir.METRICS).write_text(
      json.dumps({"step": 2, "validation/loss": 1.0}) + "\n"
      + json.dumps({"step": 4, "validation/loss": 2.0}) + "\n")
  with pytest.raises(RuntimeError, match=r"run: step\(s\) \[2, 4\] \(best by validation/loss: 2, "
                                         r"last: 4\) have no checkpoint in .*checkpoints \(kept: "
                                         r"\[\]\); the trainer keeps the best with "
                                         r"checkpoint.make_manager\(keep_best='validation/loss'\)"):
    experiments.evaluate_selected(config, workdir, 4, "run")


def test_a_distilled_run_with_lsar_and_validation_saves_plain_lsar_best_and_last(tmp_path):
  # The methods grid's hybrid + distillation run and its untrained model, in miniature, with the
  # e5 command's packing (--set pack=1) and an LSAR rank the 3 evaluation languages would refuse
  # but the 8 training languages allow.
  from hybrid_ir import run_dir
  by_name = {r.name: r for r in grids.runs("methods", ("xquad-r",))}
  common = dict(MINI, steps=4, pack=1)
  results, workdirs = tmp_path / "results", tmp_path / "w"
  for name in ("xquad-r-pretrained", "xquad-r-hybrid-distill"):
    run = by_name[name]
    experiments.execute("methods", grids.Run(name, dict(run.args, validation=2),
                                             run.pretrained), common, results, workdirs)
  root = workdirs / "methods" / "use-m3_4_8_mini_1"
  summary = json.loads((results / "methods" / "xquad-r-hybrid-distill.json").read_text())
  workdir = root / "xquad-r-hybrid-distill"
  best, last = summary["best"]["tag"], summary["tag"]
  assert last == "step_4" and summary["selection"]["step"] in (2, 4)
  lsar = summary["lsar"]
  assert (lsar["rank"], lsar["source"], lsar["tag"], lsar["best"]["tag"]) == (4, "xquad-r", last, best)
  assert lsar["subspace"]["langs"] == list(grids.train_langs(grids.parse("model=use-m3")))
  assert len(lsar["subspace"]["singular_values"]) == 8
  # Plain and LSAR results of both steps, each what eval.py wrote, in folders of their own: the
  # LSAR evaluation of a step did not overwrite its plain one.
  for tag, plain, removed in ((last, summary["datasets"], lsar["datasets"]),
                              (best, summary["best"]["datasets"], lsar["best"]["datasets"])):
    ev = json.loads((workdir / "eval" / f"{tag}.json").read_text())
    ev_lsar = json.loads((workdir / experiments.LSAR_EVAL / f"{tag}.json").read_text())
    assert ev["lsar"] is None and ev_lsar["lsar"]["rank"] == 4
    assert plain["mlqa-r"]["metrics"] == ev["details"]["mlqa-r"]["metrics"]
    assert removed["mlqa-r"]["metrics"] == ev_lsar["details"]["mlqa-r"]["metrics"]
    assert removed["mlqa-r"]["per_query"]["mul_map"] != plain["mlqa-r"]["per_query"]["mul_map"]
    assert list(ev_lsar["details"]) == ["mlqa-r"]  # the evaluation set only, no validation rerun
  # The MSE term per batch type at every logged step, copied from metrics.jsonl.
  logged = [r for r in run_dir.read_metrics(workdir) if "train/distill_mse" in r]
  assert [r["step"] for r in summary["distill_curve"]] == [r["step"] for r in logged] == [1, 2, 3, 4]
  for saved, row in zip(summary["distill_curve"], logged):
    assert saved["train/distill_mse"] == row["train/distill_mse"] > 0
    kinds = [k for k in saved if k.startswith("train/distill_mse_")]
    assert kinds and all(saved[k] == row[k] for k in kinds) and "train/info_nce" in saved
  untrained = json.loads((results / "methods" / "xquad-r-pretrained.json").read_text())
  assert untrained["tag"] == untrained["lsar"]["tag"] == "pretrained" and "best" not in untrained
  assert untrained["distill_curve"] == [] and "best" not in untrained["lsar"]
  text = report.write_report("methods", results / "methods")
  for start in ("| pretrained | untrained | yes |", "| hybrid-distill | selected | yes |",
                "| hybrid-distill | last | no |"):
    assert start in text
  assert (results / "methods" / "distill_mlqa-r.png").stat().st_size > 0


def test_lsar_grid_miniature_pairs_each_rank_with_the_plain_model(tmp_path):
  # The untrained model at LSAR ranks 1 and 7 (USE-m3 trains on 8 XQuAD-R languages: 7 directions
  # span their means), end to end: both runs share the plain evaluation's embedding cache, and
  # the report pairs each rank against the plain model by query.
  grid = [r for r in experiments.runs("lsar", ("xquad-r",)) if r.args["lsar"] in (1, 7)]
  assert [r.name for r in grid] == ["xquad-r-pretrained-lsar1", "xquad-r-pretrained-lsar7"]
  text, out_dir = _run_grid("lsar", tmp_path, grid)
  runs = {r.name: json.loads((out_dir / f"{r.name}.json").read_text()) for r in grid}
  one, seven = runs["xquad-r-pretrained-lsar1"], runs["xquad-r-pretrained-lsar7"]
  assert one["datasets"]["mlqa-r"]["per_query"] == seven["datasets"]["mlqa-r"]["per_query"]
  assert (one["lsar"]["rank"], seven["lsar"]["rank"]) == (1, 7)
  assert one["lsar"]["datasets"]["mlqa-r"]["per_query"] != seven["lsar"]["datasets"]["mlqa-r"]["per_query"]
  # Queries and passages: the plain model's once (the second run read them), each rank's own.
  cached = sorted((tmp_path / "w" / "embeddings").glob("mlqa-r-*.npy"))
  assert len(cached) == 2 + 2 * 2, cached
  rows = _table_rows(text.split("Paired against")[0], "mlqa-r")
  assert rows[:3] == ["rank 0 (plain)", "rank 1", "rank 7"]
  paired = text.split("Paired against **rank 0 (plain)**")[1].split("Share of the spread")[0]
  assert "| rank 1 |" in paired and "| rank 7 |" in paired
  sv = np.square(one["lsar"]["subspace"]["singular_values"])
  assert f"| 1 | {sv[0] / sv.sum():.3f} |" in text
  assert "| 7 | 1.000 |" in text  # every direction of 8 languages' centred means
  assert (out_dir / "lsar_mlqa-r.png").stat().st_size > 0


def test_an_lsar_rank_the_training_languages_cannot_carry_is_refused_before_any_run(tmp_path):
  import subprocess
  import sys
  # USE-m3 lacks el, hi and vi: 8 XQuAD-R languages carry ranks up to 7, not the grid's 10.
  out = subprocess.run(
      [sys.executable, "-m", "hybrid_ir.experiments", "lsar", "--model", "use-m3", "--size",
       "mini", "--directions", "xquad-r", "--results", str(tmp_path / "r"), "--workdirs",
       str(tmp_path / "w")], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert ("run xquad-r-pretrained-lsar10: lsar=10: an LSAR rank must be below the number of "
          "training languages, 8") in out.stderr
  assert not (tmp_path / "r").exists() and not (tmp_path / "w").exists()
