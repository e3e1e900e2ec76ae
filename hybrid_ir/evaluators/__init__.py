"""Evaluators by type: the one registry train.py, eval.py and report.py share.

A config's `evals` maps an eval name to {type: <a key of TYPES>, **that evaluator's arguments};
each type is a module of this package exposing `Evaluator(predict_fn, name=..., **arguments)`,
whose `run(params)` yields (`{name}/{metric}`, value) and keeps `result` (`to_json()`, `table()`).

  make(evals, predict_fn, **extra) -> {name: Evaluator}: build them once and call `run` for every
      checkpoint (a LAReQA evaluator loads and indexes its dataset when built).
  run(built, params) -> yields (name, evaluator, metrics): each evaluator run on `params`, its
      metrics with `{name}/eval_seconds`; the one loop train.py (during training) and eval.py
      (on checkpoints) share.
  types(evals) -> {name: type}: what eval.py records next to each result, so the report knows
      which results it can tabulate (the LAReQA ones) without guessing from their fields.
  markdown_table(header, rows): the markdown of a result's `table()`.

Recommended for: any code that runs a config's evaluators. Related: `hybrid_ir.evaluators.stats`
(paired tests on the per-query values), `hybrid_ir.report`.
"""
import importlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

# type -> module. A new benchmark: a module with `Evaluator`, and one line here.
TYPES = {"lareqa": "hybrid_ir.evaluators.lareqa", "miracl": "hybrid_ir.evaluators.miracl",
         "parallel": "hybrid_ir.evaluators.parallel",
         "validation": "hybrid_ir.evaluators.validation"}
# The types whose Evaluator keeps an embedding cache (takes cache_dir, cache_key): the evaluation
# sets. A validation or parallel-curve evaluator encodes held-out training texts, never reused.
CACHING_TYPES = ("lareqa", "miracl")


def module(kind: str, where: str = "type"):
  """The module implementing evaluator type `kind`; ValueError naming `where` and the types."""
  if kind not in TYPES:
    raise ValueError(f"{where}={kind!r}: no such evaluator type; known: {', '.join(TYPES)}")
  return importlib.import_module(TYPES[kind])


def types(evals: Mapping[str, Mapping[str, Any]] | None) -> dict[str, str]:
  """{eval name: type} of a config's `evals`."""
  return {name: dict(ec)["type"] for name, ec in (evals or {}).items()}


def make(evals: Mapping[str, Mapping[str, Any]] | None, predict_fn: Callable, **extra
         ) -> dict[str, Any]:
  """{eval name: Evaluator} from a config's `evals`; `extra` goes to every evaluator (e.g.
  cache_dir, cache_key). Raises ValueError naming `config.evals.<name>.type` when unknown."""
  out = {}
  for name, ec in (evals or {}).items():
    ec = dict(dict(ec), **extra)
    kind = ec.pop("type", None)
    out[name] = module(kind, f"config.evals.{name}.type").Evaluator(predict_fn, name=name, **ec)
  return out


def run(built: Mapping[str, Any], params) -> Iterator[tuple[str, Any, dict[str, float]]]:
  """Runs each evaluator of `built` (`make`) on `params`, one at a time; yields (name, evaluator,
  its metrics plus `{name}/eval_seconds`). A caller that stops iterating (a preemption) skips
  the evaluators after the current one."""
  for name, evaluator in built.items():
    t0 = time.time()
    metrics = dict(evaluator.run(params))
    metrics[f"{name}/eval_seconds"] = time.time() - t0
    yield name, evaluator, metrics


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A markdown table: the header row, the separator, then `rows` (cells formatted with str;
  an empty cell is written `| |`). For the `table()` of an evaluator's result."""
  def line(cells):
    return "".join(f"| {c} " if str(c) else "| " for c in cells) + "|"
  return "\n".join([line(header), "|---" * len(header) + "|", *map(line, rows)])
