"""Evaluating a model: the config's model as loaded, one checkpoint, or a training workdir's
checkpoints as they appear (polling) — what `python -m hybrid_ir.eval` runs, as a library.

Inputs: a config (its `model` builds the encoder and the restore target; its `evals` name the
evaluators, built once: `hybrid_ir.evaluators`) and a workdir. Each evaluated model's table is
printed, then `<out>/<tag>.json` (every metric, counts, per-query arrays) and `<out>/<tag>.md`
are written, tag `step_<N>` or `pretrained`. `run` is the entry point; `poll` the checkpoint
loop; `evaluate` one model. The binary's docstring (hybrid_ir.eval) says how polling ends and
what happens to deleted or damaged checkpoints. Used by hybrid_ir.eval and the experiment runner.
"""
import dataclasses
import json
import sys
import time
from typing import Any

from absl import logging
from etils import epath

from hybrid_ir import config_flags
from hybrid_ir import lsar
from hybrid_ir import run_dir


class Evaluated(list):
  """The tags evaluated, in order (a list), with what else happened:
  skipped {step: why} (deleted while read, or damaged) and stopped_by (why polling ended)."""

  def __init__(self):
    super().__init__()
    self.skipped: dict[int, str] = {}
    self.stopped_by = ""

  def summary(self) -> str:
    done = [t[5:] for t in self if t.startswith("step_")]
    text = f"eval: evaluated {len(self)} model(s)" + (f" (steps {', '.join(done)})" if done
                                                      else "")
    if self.skipped:
      text += f"; skipped {len(self.skipped)} checkpoint(s): " + "; ".join(
          f"step {s}: {why}" for s, why in sorted(self.skipped.items()))
    return text + (f". Stopped: {self.stopped_by}." if self.stopped_by else ".")


class Stopped(Exception):
  """Raised by the binary's SIGINT/SIGTERM handlers: end with the summary, not a traceback."""

  def __init__(self, signame: str):
    super().__init__(signame)
    self.signame = signame


def _say(msg: str) -> None:
  logging.warning("%s", msg)
  print(msg, file=sys.stderr, flush=True)


def evaluate(config, encoder, params, tag: str, out_dir: epath.Path,
             built: dict[str, Any] | None = None,
             lsar_dir: epath.Path | None = None) -> dict[str, float]:
  """Runs every evaluator on `params`; prints the table, then writes `<tag>.json` and `<tag>.md`;
  returns the metrics. built: the evaluators (`make_evaluators`), else built here. With
  config.model.lsar on, the params' subspace (`lsar.estimate`, kept in lsar_dir, default
  <out_dir>/lsar) is removed from every embedding."""
  from hybrid_ir import evaluators, models
  built = built if built is not None else make_evaluators(config, encoder)
  sub = lsar.estimate(config, encoder, params, directory=lsar_dir or out_dir / "lsar", tag=tag)
  if sub is not None:
    _say(sub.summary())
    params = lsar.Projected(params, sub.basis)
  uncovered = _uncovered_langs(config, built, models)
  if uncovered:
    logging.warning("%s was not trained on %s: those rows measure an unseen language.",
                    config.model.name, ", ".join(uncovered))
  metrics, details, tables = {}, {}, []
  for name, evaluator, ran in evaluators.run(built, params):
    metrics.update(ran)
    if getattr(evaluator, "result", None) is not None:
      details[name] = evaluator.result.to_json()
      tables.append(f"### {name} — {tag}\n\n"
                    + evaluator.result.table(f"{config.model.name} ({tag})"))
  table = "\n\n".join(tables)
  # Printed before anything is written: a failing write loses no result.
  print(table, flush=True)
  report = {"tag": tag, "model": config.model.name, "uncovered_langs": list(uncovered),
            "types": evaluators.types(config.evals), "metrics": metrics, "details": details,
            "truncations": dict(getattr(encoder.tokenizer, "stats", {}) or {}),
            "lsar": None if sub is None else {
                **dataclasses.asdict(sub.settings), "langs": list(sub.langs),
                "counts": list(sub.counts), "path": str(sub.path), "key": sub.key,
                "singular_values": [float(x) for x in sub.singular_values]}}
  (out_dir / f"{tag}.json").write_text(json.dumps(report, default=float))
  (out_dir / f"{tag}.md").write_text(table + "\n")
  logging.info("wrote %s", out_dir / f"{tag}.json")
  return metrics


def _uncovered_langs(config, built, models) -> tuple[str, ...]:
  """The model's uncovered languages that these evaluators evaluate (MLQA-R has no el)."""
  uncovered = models.uncovered_langs(config.model.name)
  langs = [getattr(getattr(e, "data", None), "langs", None) for e in built.values()]
  if uncovered and all(l is not None for l in langs):
    evaluated = {l for ls in langs for l in ls}
    uncovered = tuple(l for l in uncovered if l in evaluated)
  return tuple(uncovered)


def make_evaluators(config, encoder, *, pretrained: bool = False) -> dict[str, Any]:
  """The config's evaluators (`hybrid_ir.evaluators.make`), once for all checkpoints.

  With config.cache_dir, the evaluation sets' embeddings (evaluators.CACHING_TYPES) are cached
  for the untrained model (to re-derive metrics without encoding again); the entries are named
  by the params' fingerprint as well, so a cache is never read for other weights (nor LSAR
  embeddings for plain ones: `lsar.Projected` weights fingerprint with their basis).
  """
  from hybrid_ir import evaluators
  predict_fn = lsar.predict_fn(encoder, config.get("eval_batch_size", 64))
  if not (pretrained and config.get("cache_dir")):
    return evaluators.make(config.evals, predict_fn)
  cache = dict(cache_dir=config.cache_dir, cache_key=json.dumps(
      lsar.encoding_settings(config.model), sort_keys=True))
  kinds = evaluators.types(config.evals)
  return {n: evaluators.make({n: e}, predict_fn,
                             **(cache if kinds[n] in evaluators.CACHING_TYPES else {}))[n]
          for n, e in config.evals.items()}


def _restore(workdir, step, target, done: Evaluated):
  """Params of `step`, or None when it was deleted or is damaged (recorded in done.skipped)."""
  from hybrid_ir import checkpoint
  try:
    return checkpoint.restore_params(workdir, step, target)
  except FileNotFoundError as e:  # keep-N removed it between the scan and the end of the read
    done.skipped[step] = f"deleted while it was being read (keep-N) ({e})"
    _say(f"eval: checkpoint {step} was deleted before it could be evaluated (the trainer's "
         "keep-N); skipped")
  except checkpoint.CorruptCheckpointError as e:
    if _vanishes(checkpoint.checkpoint_dir(workdir) / str(step)):
      # keep-N's delete was under way: half a step's files read as damage.
      done.skipped[step] = "deleted while it was being read (keep-N)"
      _say(f"eval: checkpoint {step} was deleted while it was being read (the trainer's "
           "keep-N); skipped")
    else:
      done.skipped[step] = f"damaged: {e}"
      _say(f"eval: checkpoint {step} is damaged; skipped: {e}")
  return None


def _vanishes(path, seconds: float = 2.0) -> bool:
  """Whether `path` is gone within `seconds` (a delete in progress), or stays."""
  end = time.time() + seconds
  while path.exists():
    if time.time() > end:
      return False
    time.sleep(0.1)
  return True


def _trainer_done(finished: dict | None, workdir, steps: list[int],
                  saved_totals: dict[int, int | None]) -> str | None:
  """Why the trainer will write no further checkpoint, or None while it may.

  finished: its finished.json (`run_dir.read_finished`); else the config saved with the newest
  checkpoint is read (cached per step in `saved_totals`): that step being its total_steps.
  """
  from hybrid_ir import checkpoint
  if finished is not None:
    return f"the trainer finished at step {finished.get('step')} (finished.json)"
  if not steps:
    return None
  newest = steps[-1]
  if newest not in saved_totals:
    try:
      saved_totals[newest] = int(checkpoint.saved_config(workdir, newest)["total_steps"])
    except (checkpoint.CorruptCheckpointError, FileNotFoundError, KeyError, TypeError,
            ValueError):
      saved_totals[newest] = None
  total = saved_totals[newest]
  if total is not None and newest >= total:
    return f"checkpoint {newest} is the trainer's last (its saved config: total_steps={total})"
  return None


def poll(config, encoder, workdir: epath.Path, *, once: bool, poll_seconds: float = 30.0,
         max_idle_seconds: float = 3600.0, out_dir: epath.Path | None = None,
         built: dict[str, Any] | None = None) -> Evaluated:
  """Evaluates each finished checkpoint not yet evaluated; returns the tags (`Evaluated`).

  With `once`, only the newest good checkpoint. Otherwise it polls every `poll_seconds` until the
  trainer is done (module docstring) or no new checkpoint came for `max_idle_seconds`.
  Raises FileNotFoundError (--once, no checkpoint) or CorruptCheckpointError (--once, all bad).
  """
  from hybrid_ir import checkpoint
  out_dir = out_dir or workdir / "eval"
  target = checkpoint.abstract(encoder.params)
  built = built if built is not None else make_evaluators(config, encoder)
  done, idle_since, saved_totals = Evaluated(), time.time(), {}
  try:
    if once:
      steps = checkpoint.finished_steps(workdir)
      if not steps:
        raise FileNotFoundError(
            f"--once: no finished checkpoint in {checkpoint.checkpoint_dir(workdir)}")
      for step in reversed(steps):
        params = _restore(workdir, step, target, done)
        if params is not None:
          if done.skipped:
            _say(f"eval: evaluating checkpoint {step}, the newest good one")
          evaluate(config, encoder, params, f"step_{step}", out_dir, built,
                   lsar.default_dir(workdir))
          done.append(f"step_{step}")
          return done
      raise checkpoint.CorruptCheckpointError(
          f"--once: no usable checkpoint in {checkpoint.checkpoint_dir(workdir)}: "
          + "; ".join(f"step {s}: {why}" for s, why in sorted(done.skipped.items())))
    _say(f"eval: polling {checkpoint.checkpoint_dir(workdir)} every {poll_seconds:g} s, until "
         f"the trainer is done or {max_idle_seconds:.0f} s pass without a new checkpoint")
    while True:
      # Read before the scan: a trainer writes finished.json once its last checkpoint is final,
      # so a scan after it sees every checkpoint there will be.
      finished = run_dir.read_finished(workdir)
      steps = checkpoint.finished_steps(workdir)
      todo = [s for s in steps if s not in done.skipped and f"step_{s}" not in done
              and not (out_dir / f"step_{s}.json").exists()]
      if todo:
        for step in todo:
          params = _restore(workdir, step, target, done)
          if params is not None:
            evaluate(config, encoder, params, f"step_{step}", out_dir, built,
                     lsar.default_dir(workdir))
            done.append(f"step_{step}")
        idle_since = time.time()
        continue  # scan again at once: checkpoints may have come meanwhile
      end = _trainer_done(finished, workdir, steps, saved_totals)
      if end is not None:
        done.stopped_by = end
        return done
      if time.time() - idle_since > max_idle_seconds:
        done.stopped_by = f"no new checkpoint for {max_idle_seconds:.0f} s (--max_idle_seconds)"
        return done
      time.sleep(poll_seconds)
  except Stopped as e:
    done.stopped_by = f"{e.signame} received"
    return done
  finally:
    if not once or done.skipped:
      print(done.summary(), flush=True)
    logging.info("%s", done.summary())


def run(config, workdir: epath.Path, *, pretrained: bool = False, once: bool = False,
        output_dir: str | None = None, log_file: bool = False, **poll_kwargs) -> Evaluated:
  """What the binary does, callable in-process: returns the tags evaluated (`Evaluated`).

  Before evaluating anything it checks that the workdir is no file and that the output directory
  (output_dir, default <workdir>/eval) can be written (WorkdirError naming it). log_file: the
  log goes to <output dir>/eval.INFO from then on (the binary).
  """
  with run_dir.HeldLog() as log:
    if not config.get("evals"):
      raise config_flags.ConfigError("the config has no `evals` to run (a training-only "
                                     f"config?); keys: {sorted(config.keys())}")
    lsar.check(config)  # a bad model.lsar fails before the model loads
    from hybrid_ir import models  # heavy import; keeps --help fast
    encoder = models.load_encoder(config.model)
    # Before anything is evaluated: results must have somewhere to go. The workdir is created if
    # missing (a poller may start before the trainer).
    workdir = run_dir.check_workdir(workdir, create=True, writable=False)
    out_dir = run_dir.check_workdir(output_dir or workdir / "eval", create=True,
                                       flag="--output_dir" if output_dir else "the output dir")
    if log_file:
      log.to_file("eval", out_dir)
  built = make_evaluators(config, encoder, pretrained=pretrained)
  if pretrained:
    done = Evaluated()
    evaluate(config, encoder, encoder.params, "pretrained", out_dir, built,
             lsar.default_dir(workdir))
    done.append("pretrained")
    return done
  return poll(config, encoder, workdir, once=once, out_dir=out_dir, built=built, **poll_kwargs)
