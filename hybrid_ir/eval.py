"""Evaluates a training workdir's checkpoints as they appear, or a pretrained model untrained.

  python -m hybrid_ir.eval --config configs/demo.py --workdir W              # poll W's checkpoints
  python -m hybrid_ir.eval --config configs/demo.py --workdir W --once       # latest finished one
  python -m hybrid_ir.eval --config configs/e5_small.py --workdir W --pretrained

The config's `model` builds the encoder (and, for checkpoints, the abstract restore target);
its `evals` name the evaluators (`type` = a module of hybrid_ir.evaluators exposing `Evaluator`).
For each evaluated model it writes `W/eval/<tag>.json` (every metric, counts, per-query arrays)
and `W/eval/<tag>.md` (the table), where tag is `step_<N>` or `pretrained`, and prints the table.
Only finished checkpoints are ever read (see hybrid_ir.checkpoint). Polling ends once the config's
`total_steps` has been evaluated, or after --max_idle_seconds without a new checkpoint.
"""
import functools
import importlib
import json
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from etils import epath

from hybrid_ir import config_flags



def define_flags() -> None:
  """The binary's flags; defined only when run as a program (see hybrid_ir.train.define_flags)."""
  config_flags.define_config()
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/), or output dir.")
  flags.DEFINE_bool("once", False, "Evaluate the latest finished checkpoint and exit.")
  flags.DEFINE_bool("pretrained", False, "Evaluate the config's model as loaded, no checkpoint.")
  flags.DEFINE_float("poll_seconds", 30.0, "Seconds between checkpoint scans.")
  flags.DEFINE_float("max_idle_seconds", 3600.0,
                     "Stop polling after this long without a new checkpoint.")


def make_evaluators(config, predict_fn, **extra) -> dict[str, Any]:
  """{eval name: Evaluator} from `config.evals` (the same construction train.py uses)."""
  evaluators = {}
  for name, ec in config.evals.items():
    ec = dict(ec, **extra)
    kind = ec.pop("type")
    try:
      module = importlib.import_module(f"hybrid_ir.evaluators.{kind}")
    except ModuleNotFoundError as e:
      raise ValueError(f"config.evals.{name}.type={kind!r}: no module hybrid_ir.evaluators.{kind}"
                       ) from e
    evaluators[name] = module.Evaluator(predict_fn, name=name, **ec)
  return evaluators


def evaluate(config, encoder, params, tag: str, out_dir: epath.Path) -> dict[str, float]:
  """Runs every evaluator on `params`; writes `<tag>.json` and `<tag>.md`; returns the metrics."""
  from hybrid_ir import models
  uncovered = models.UNCOVERED_LANGS.get(config.model.name, ())
  if uncovered:
    logging.warning("%s was not trained on %s: those rows measure an unseen language.",
                    config.model.name, ", ".join(uncovered))
  predict_fn = functools.partial(encoder.encode, batch_size=config.get("eval_batch_size", 64))
  metrics, details, tables = {}, {}, []
  # Embeddings of an untrained model can be cached (e.g. to re-derive metrics without encoding
  # again); trained params are never cached, since params alone cannot be hashed cheaply.
  extra = {}
  if tag == "pretrained" and config.get("cache_dir"):
    extra = dict(cache_dir=config.cache_dir, cache_key=json.dumps(config.model.to_dict(),
                                                                   sort_keys=True))
  for name, evaluator in make_evaluators(config, predict_fn, **extra).items():
    t0 = time.time()
    metrics.update(evaluator.run(params))
    metrics[f"{name}/eval_seconds"] = time.time() - t0
    if hasattr(evaluator, "result"):
      details[name] = evaluator.result.to_json()
      tables.append(f"### {name} — {tag}\n\n{evaluator.result.table(f'{config.model.name} ({tag})')}")
  out_dir.mkdir(parents=True, exist_ok=True)
  report = {"tag": tag, "model": config.model.name, "uncovered_langs": list(uncovered),
            "metrics": metrics, "details": details,
            "truncations": dict(getattr(encoder.tokenizer, "stats", {}) or {})}
  (out_dir / f"{tag}.json").write_text(json.dumps(report, default=float))
  table = "\n\n".join(tables)
  (out_dir / f"{tag}.md").write_text(table + "\n")
  print(table, flush=True)
  logging.info("wrote %s", out_dir / f"{tag}.json")
  return metrics


def poll(config, encoder, workdir: epath.Path, *, once: bool, poll_seconds: float = 30.0,
         max_idle_seconds: float = 3600.0) -> list[int]:
  """Evaluates each finished checkpoint not yet evaluated; returns the steps evaluated.

  With `once`, only the latest finished checkpoint. Otherwise it polls every `poll_seconds` until
  `config.total_steps` has been evaluated or no new checkpoint came for `max_idle_seconds`.
  """
  from hybrid_ir import checkpoint
  out_dir, target = workdir / "eval", checkpoint.abstract(encoder.params)
  total, done, idle_since = config.get("total_steps"), [], time.time()
  while True:
    steps = checkpoint.finished_steps(workdir)
    todo = steps[-1:] if once else [s for s in steps if not (out_dir / f"step_{s}.json").exists()]
    if once and not steps:
      raise FileNotFoundError(f"--once: no finished checkpoint in {checkpoint.checkpoint_dir(workdir)}")
    for step in todo:
      try:
        params = checkpoint.restore_params(workdir, step, target)
      except FileNotFoundError:  # keep-N removed it between the scan and the restore
        logging.warning("checkpoint %d disappeared before it could be evaluated (keep-N); skipped",
                        step)
        continue
      evaluate(config, encoder, params, f"step_{step}", out_dir)
      done.append(step)
      idle_since = time.time()
    if once or (total is not None and (out_dir / f"step_{total}.json").exists()):
      return done
    if time.time() - idle_since > max_idle_seconds:
      logging.info("no new checkpoint for %.0fs; stopping", max_idle_seconds)
      return done
    time.sleep(poll_seconds)


def run(config, workdir: epath.Path, *, pretrained: bool = False, once: bool = False,
        **poll_kwargs) -> list[str]:
  """What the binary does, callable in-process: returns the tags evaluated."""
  workdir = epath.Path(workdir)  # local or gs://
  if not config.get("evals"):
    raise ValueError(f"config has no `evals` to run; keys: {sorted(config.keys())}")
  from hybrid_ir import models  # heavy import; keeps --help fast
  encoder = models.load_encoder(config.model)
  if pretrained:
    evaluate(config, encoder, encoder.params, "pretrained", workdir / "eval")
    return ["pretrained"]
  return [f"step_{s}" for s in poll(config, encoder, workdir, once=once, **poll_kwargs)]


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  if not f.workdir:
    raise app.UsageError("--workdir is required")
  run(f.config, f.workdir, pretrained=f.pretrained, once=f.once,
      poll_seconds=f.poll_seconds, max_idle_seconds=f.max_idle_seconds)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=config_flags.parse_flags)
