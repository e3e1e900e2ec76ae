"""hybrid_ir.evaluators, the evaluators' registry: a config's `evals` built by type (the module
found from TYPES, `extra` given to each), unknown types named with the config key, the one loop
that runs them (metrics plus eval_seconds, stopping early skips the rest), `types` and the
markdown of results' tables. Each evaluator's own tests: test_lareqa_evaluator, test_miracl,
test_parallel, test_validation."""
import sys

import pytest

from hybrid_ir import evaluators


class Evaluator:
  """A stand-in evaluator type: this test module, registered in TYPES as 'fake'."""

  def __init__(self, predict_fn, *, name, scale=1.0, cache_dir=None):
    self.predict_fn, self.name, self.scale, self.cache_dir = predict_fn, name, scale, cache_dir
    self.runs = []

  def run(self, params):
    self.runs.append(params)
    yield f"{self.name}/score", self.scale * params


@pytest.fixture
def fake_type(monkeypatch):
  monkeypatch.setitem(evaluators.TYPES, "fake", __name__)
  assert sys.modules[__name__].Evaluator is Evaluator


def test_make_builds_each_eval_by_type_with_its_arguments_and_the_extras(fake_type):
  def predict(params, texts, kind):
    return None
  evals = {"a": dict(type="fake", scale=2.0), "b": {"type": "fake"}}
  built = evaluators.make(evals, predict, cache_dir="/c")
  assert list(built) == ["a", "b"] and all(isinstance(e, Evaluator) for e in built.values())
  assert [(e.name, e.scale, e.cache_dir, e.predict_fn) for e in built.values()] == [
      ("a", 2.0, "/c", predict), ("b", 1.0, "/c", predict)]
  assert evals == {"a": dict(type="fake", scale=2.0), "b": {"type": "fake"}}  # left as it was
  assert evaluators.make(None, predict) == {}
  assert evaluators.types(evals) == {"a": "fake", "b": "fake"}
  assert evaluators.types(None) == {}


def test_unknown_types_are_named_with_their_config_key():
  with pytest.raises(ValueError, match=r"^config\.evals\.mine\.type='trec': no such evaluator "
                                       r"type; known: lareqa, miracl, parallel, validation$"):
    evaluators.make({"mine": {"type": "trec"}}, None)
  with pytest.raises(ValueError, match=r"^config\.evals\.x\.type=None: no such evaluator type"):
    evaluators.make({"x": {}}, None)
  with pytest.raises(ValueError, match=r"^type='nope': no such"):
    evaluators.module("nope")
  assert evaluators.module("miracl").__name__ == "hybrid_ir.evaluators.miracl"


def test_run_yields_each_evaluators_metrics_with_its_time_and_stops_when_the_caller_does(
    fake_type):
  built = evaluators.make({"a": dict(type="fake", scale=2.0), "b": {"type": "fake"}}, None)
  out = list(evaluators.run(built, 3))
  assert [(name, e) for name, e, _ in out] == [("a", built["a"]), ("b", built["b"])]
  assert [sorted(m) for _, _, m in out] == [["a/eval_seconds", "a/score"],
                                            ["b/eval_seconds", "b/score"]]
  assert (out[0][2]["a/score"], out[1][2]["b/score"]) == (6.0, 3.0)
  assert all(m[f"{n}/eval_seconds"] >= 0 for n, _, m in out)
  # A preemption between evaluators: the ones after the current one never run.
  loop = evaluators.run(built, 5)
  next(loop)
  loop.close()
  assert (built["a"].runs, built["b"].runs) == ([3, 5], [3])


def test_markdown_table():
  assert evaluators.markdown_table(["model", "Mo", "Cr"], [["e5", 0.5, ""], ["", "x", 1]]) == (
      "| model | Mo | Cr |\n|---|---|---|\n| e5 | 0.5 | |\n| | x | 1 |")
  assert evaluators.markdown_table(["a"], []) == "| a |\n|---|"
