"""selection.py: the best step of a synthetic validation curve, its direction, ties and errors."""
import json
import math

import numpy as np
import pytest

from hybrid_ir import run_dir
from hybrid_ir import selection


def _validation_curve(steps, best, floor=1.5):
  """A U-shaped validation loss over `steps` with its minimum at `best` (overfitting after it),
  and a mAP that peaks at the same step, as metrics rows among training rows."""
  rows = []
  for s in steps:
    rows.append({"step": s, "train/loss": 3.0 / s})  # training loss keeps falling
    rows.append({"step": s, "validation/loss": floor + 1e-3 * (s - best) ** 2,
                 "validation/mo_map": 0.7 - 1e-4 * (s - best) ** 2, "validation/eval_seconds": 1})
  return rows


@pytest.mark.parametrize("best", [30, 90, 150, 300])
def test_best_step_of_a_synthetic_validation_curve(tmp_path, best):
  steps = list(range(30, 301, 30))
  (tmp_path / run_dir.METRICS).write_text(
      "".join(json.dumps(r) + "\n" for r in _validation_curve(steps, best)))
  rows = run_dir.read_metrics(tmp_path)
  by_loss = selection.best_step(rows, "validation/loss")
  assert by_loss == selection.Selected(best, 1.5, "validation/loss", "min")
  by_map = selection.best_step(rows, "validation/mo_map")
  assert (by_map.step, by_map.mode) == (best, "max") and by_map.value == pytest.approx(0.7)
  # The same curve read the other way round picks an end of it instead.
  assert selection.best_step(rows, "validation/loss", mode="max").step in (steps[0], steps[-1])
  assert selection.curve(rows, "validation/loss")[0] == (30, pytest.approx(1.5 + 1e-3 * (30 - best) ** 2))


def test_ties_go_to_the_earliest_step_nans_are_skipped_and_a_remeasured_step_counts_last():
  rows = [{"step": 10, "v/loss": 2.0}, {"step": 20, "v/loss": 1.0}, {"step": 30, "v/loss": 1.0},
          {"step": 40, "v/loss": math.nan}, {"step": 50, "v/loss": 1.0}, {"step": 5}]
  assert selection.best_step(rows, "v/loss") == (20, 1.0, "v/loss", "min")
  assert selection.best_step(rows, "v/loss", "max") == (10, 2.0, "v/loss", "max")
  # Step 20 measured again after a resume: its last value is the one that counts.
  assert selection.best_step(rows + [{"step": 20, "v/loss": 1.5}], "v/loss").step == 30
  assert selection.curve(rows, "v/loss")[:3] == [(10, 2.0), (20, 1.0), (30, 1.0)]


def test_a_missing_metric_is_named_with_the_metrics_there_are():
  rows = _validation_curve([10, 20], best=10)
  with pytest.raises(ValueError, match=r"no row of the 4 metrics rows holds 'validation/mul_map'; "
                                       r"the evaluation metrics they hold: \['validation/eval_seconds"
                                       r"', 'validation/loss', 'validation/mo_map'\]"):
    selection.best_step(rows, "validation/mul_map")
  with pytest.raises(ValueError, match=r"'v/loss' is NaN or infinite at every step it was "
                                       r"measured \(\[1, 2\]\)"):
    selection.best_step([{"step": 1, "v/loss": np.nan}, {"step": 2, "v/loss": np.inf}], "v/loss")
  with pytest.raises(ValueError, match=r"mode='lowest'; expected one of \('min', 'max'\)"):
    selection.best_step(rows, "validation/loss", mode="lowest")


@pytest.mark.parametrize("metric,mode", [
    ("validation/loss", "min"), ("validation/loss_cross", "min"), ("mlqa-r/rank_distance", "min"),
    ("parallel/sq_dist", "min"), ("validation/mo_map", "max"), ("mlqa-r/mul_map@20", "max"),
    ("xquad-r/de/cr_r1", "max"), ("x/mul_r10", "max"), ("x/mul_success10", "max"),
    ("validation/acc", "max")])
def test_direction_from_the_metric_name(metric, mode):
  assert selection.direction(metric) == mode


def test_a_metric_of_no_known_direction_must_be_given_one():
  with pytest.raises(ValueError, match=r"metric 'x/num_questions': no known direction .* give "
                                       r"mode='min' or 'max'"):
    selection.best_step([{"step": 1, "x/num_questions": 3}], "x/num_questions")
  assert selection.best_step([{"step": 1, "x/num_questions": 3}, {"step": 2, "x/num_questions": 4}],
                             "x/num_questions", "max").step == 2
