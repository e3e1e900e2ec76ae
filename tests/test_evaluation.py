"""The eval binary: pretrained evaluation, and polling a workdir while the trainer writes to it."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from hybrid_ir import checkpoint, config_flags
from hybrid_ir import evaluation

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN_CONFIG = REPO / "tests" / "configs_test_train.py"


def small_config(shared_data, **train_overrides):
  """The trainer test's tiny BERT, evaluated on two MLQA-R languages."""
  config = config_flags.load_config_file(str(TRAIN_CONFIG))
  config.evals = {"mlqa-r": dict(type="lareqa", dataset="mlqa-r", data_dir=str(shared_data),
                                 langs=("de", "zh"), candidate_text="sentence")}
  config.eval_batch_size = 256
  for k, v in train_overrides.items():
    config[k] = v
  return config


def test_pretrained_writes_metrics_json_and_table(tmp_path, shared_data, capsys):
  config = small_config(shared_data)
  assert evaluation.run(config, tmp_path, pretrained=True) == ["pretrained"]
  report = json.loads((tmp_path / "eval" / "pretrained.json").read_text())
  m = report["metrics"]
  # MLQA-R de + zh: every count the evaluator used is reported, nothing dropped silently.
  assert m["mlqa-r/num_questions"] == 512 + 504
  assert m["mlqa-r/num_candidates"] == 2362 + 2322
  details = report["details"]["mlqa-r"]
  assert len(details["per_query"]["mul_ap"]) == 1016
  for k in ("mo_map", "cr_map", "mul_map"):
    assert 0.0 < m[f"mlqa-r/{k}"] <= 1.0
  table = (tmp_path / "eval" / "pretrained.md").read_text()
  assert "| de |" in table and "| zh |" in table and "rank dist." in table
  assert "1016 questions" in capsys.readouterr().out


def test_poll_reads_only_finished_checkpoints_while_training(tmp_path, shared_data):
  """A trainer subprocess saves every 2 steps (async) while eval polls the same workdir."""
  total = 8
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen(
      [sys.executable, "-m", "hybrid_ir.train", f"--config={TRAIN_CONFIG}",
       f"--workdir={tmp_path}", f"--config.total_steps={total}", "--config.checkpoint.every=2",
       "--config.checkpoint.keep=10"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    config = small_config(shared_data, total_steps=total)
    evaluated = evaluation.run(config, tmp_path, poll_seconds=0.2, max_idle_seconds=300)
    out, _ = proc.communicate(timeout=300)
  finally:
    proc.kill()
  assert proc.returncode == 0, out[-3000:]
  finished = checkpoint.finished_steps(tmp_path)
  assert f"step_{total}" in evaluated  # polling stops once the last step is evaluated
  assert {int(t[5:]) for t in evaluated} <= set(finished)
  # What eval scored at step N is exactly the finished checkpoint N (no partial read):
  # re-evaluating the final params gives the same per-query values.
  from hybrid_ir import models
  encoder = models.load_encoder(config.model)
  params = checkpoint.restore_params(tmp_path, total, checkpoint.abstract(encoder.params))
  again = evaluation.evaluate(config, encoder, params, "again", tmp_path / "eval")
  first = json.loads((tmp_path / "eval" / f"step_{total}.json").read_text())["metrics"]
  for k in ("mlqa-r/mo_map", "mlqa-r/mul_map", "mlqa-r/rank_distance"):
    assert again[k] == pytest.approx(first[k], abs=1e-9)


def test_once_without_checkpoints_says_where_it_looked(tmp_path, shared_data):
  with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
    evaluation.run(small_config(shared_data), tmp_path, once=True)


def test_unknown_evaluator_type_is_named(tmp_path, shared_data):
  config = small_config(shared_data)
  config.evals = {"x": dict(type="nope")}
  with pytest.raises(ValueError, match="config.evals.x.type='nope'"):
    evaluation.run(config, tmp_path, pretrained=True)


def test_cli_rejects_a_misspelt_config_key(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "hybrid_ir.eval", "--config=configs/e5_small.py",
       f"--workdir={tmp_path}", "--pretrained", "--config.evalz.x=1"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "evalz" in out.stderr and "valid:" in out.stderr


def test_in_training_evaluation_writes_metrics(tmp_path, shared_data):
  """train.py's optional evaluator hook uses the same evaluators as the eval binary."""
  from hybrid_ir import train
  config = small_config(shared_data, total_steps=4, eval_every=4)
  train.train(config, tmp_path)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in rows if "mlqa-r/mo_map" in r]
  assert [r["step"] for r in evals] == [4]
  assert 0.0 < evals[0]["mlqa-r/mo_map"] <= 1.0 and evals[0]["mlqa-r/num_questions"] == 1016


def test_cli_names_a_config_without_evals(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "hybrid_ir.eval", f"--config={TRAIN_CONFIG}", f"--workdir={tmp_path}",
       "--once"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert out.stderr.startswith("hybrid_ir.eval: error: the config has no `evals`"), out.stderr
  assert "Traceback" not in out.stderr


def test_the_untrained_models_cache_goes_to_the_evaluation_sets_only(monkeypatch):
  # configs with cache_dir (e5_small.py) and a validation fold (the methods grid) evaluated
  # --pretrained: the evaluation sets keep their embeddings; the validation evaluator, which takes
  # no cache, is built without one; the config's order is kept.
  import types

  import ml_collections

  from hybrid_ir import evaluators

  def evaluator(**accepted):
    class Evaluator:
      def __init__(self, predict_fn, name, **kw):
        assert set(kw) <= set(accepted), (name, kw)
        self.name, self.kw = name, kw
    return types.SimpleNamespace(Evaluator=Evaluator)

  kinds = {"sets": evaluator(cache_dir=1, cache_key=1), "heldout": evaluator()}
  monkeypatch.setattr(evaluators, "module", lambda kind, where="type": kinds[kind])
  monkeypatch.setattr(evaluators, "CACHING_TYPES", ("sets",))
  config = ml_collections.ConfigDict(dict(
      cache_dir="/c", model=dict(name="m", lsar=dict(rank=2)),
      evals=dict(a_validation=dict(type="heldout"), z_mlqa=dict(type="sets"))))
  built = evaluation.make_evaluators(config, encoder=None, pretrained=True)
  assert list(built) == list(config.evals) == ["a_validation", "z_mlqa"]
  assert built["a_validation"].kw == {}
  assert built["z_mlqa"].kw == {"cache_dir": "/c", "cache_key": json.dumps({"name": "m"})}
  trained = evaluation.make_evaluators(config, encoder=None)  # a checkpoint's: never cached
  assert trained["z_mlqa"].kw == {} == trained["a_validation"].kw
