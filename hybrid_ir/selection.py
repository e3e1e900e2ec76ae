"""Model selection: the best step of a run by a metric it measured during training.

A run that evaluates a validation split every N steps (`hybrid_ir.evaluators.validation`) logs
rows such as {'step': 60, 'validation/loss': 1.92, 'validation/mo_map': .61} to metrics.jsonl.
The best step is the one whose value of the chosen metric is lowest ('min': a loss, a rank
distance) or highest ('max': a mAP, a recall). Ties go to the earliest step: the least training
for the same score. Rows without the metric, and NaN values, are not candidates.

  direction(metric) -> 'min' | 'max': the direction a metric's name implies.
  best_step(rows, metric, mode=None) -> Selected(step, value, metric, mode).
  curve(rows, metric) -> [(step, value)]: the metric's values in step order (the summary's
      validation curve).

Inputs: `rows` are metrics rows, each a dict with 'step' (`hybrid_ir.run_dir.read_metrics`).
A step logged twice (a run resumed at that step measured it again) counts with its last value.
Recommended for: the experiment runner (which checkpoint to report) and the checkpoint manager's
keep-best policy (`hybrid_ir.checkpoint.make_manager(keep_best=...)`), so both pick the same step.
"""
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

MODES = ("min", "max")
# Words of a metric's name (the part after the last '/', split at '_'): a word starting with
# one of _LOWER makes it lower-is-better, else one starting with one of _HIGHER higher-is-better.
_LOWER = ("loss", "dist")
_HIGHER = ("map", "r1", "recall", "success", "acc")


class Selected(NamedTuple):
  """The step `best_step` picked, its value, and the metric and direction it was picked by."""
  step: int
  value: float
  metric: str
  mode: str


def direction(metric: str) -> str:
  """'min' for losses and rank distances, 'max' for mAP, recall, success and accuracy (by the
  name after the last '/'); ValueError naming the metric for any other name."""
  words = metric.rsplit("/", 1)[-1].split("_")
  if any(w.startswith(_LOWER) for w in words):
    return "min"
  if any(w.startswith(_HIGHER) for w in words):
    return "max"
  raise ValueError(f"metric {metric!r}: no known direction (lower-is-better names have a word "
                   f"starting with {', '.join(_LOWER)}; higher-is-better ones with "
                   f"{', '.join(_HIGHER)}); give mode='min' or 'max'")


def curve(rows: Iterable[Mapping[str, Any]], metric: str) -> list[tuple[int, float]]:
  """(step, value) of every row holding `metric`, in step order, a step's last value kept."""
  by_step = {}
  for row in rows:
    if metric in row and row[metric] is not None:
      by_step[int(row["step"])] = float(row[metric])
  return sorted(by_step.items())


def best_step(rows: Iterable[Mapping[str, Any]], metric: str, mode: str | None = None
              ) -> Selected:
  """The step with the best finite value of `metric` (`mode` 'min' or 'max'; default
  `direction(metric)`); ties go to the earliest step.

  Raises ValueError naming the metric and the metrics the rows do hold when no row has it, or
  when every value of it is NaN.
  """
  mode = mode or direction(metric)
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}; expected one of {MODES}")
  rows = list(rows)
  points = curve(rows, metric)
  if not points:
    logged = sorted({k for r in rows for k in r if k != "step" and not k.startswith("train/")})
    raise ValueError(f"no row of the {len(rows)} metrics rows holds {metric!r}; the evaluation "
                     f"metrics they hold: {logged[:20] or 'none'}"
                     + (" ..." if len(logged) > 20 else ""))
  finite = [(s, v) for s, v in points if math.isfinite(v)]
  if not finite:
    raise ValueError(f"{metric!r} is NaN or infinite at every step it was measured "
                     f"({[s for s, _ in points]})")
  sign = 1.0 if mode == "min" else -1.0
  step, value = min(finite, key=lambda sv: (sign * sv[1], sv[0]))
  return Selected(step, value, metric, mode)
