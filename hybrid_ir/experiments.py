"""The paper's experiments as grids of runs: `python -m hybrid_ir.experiments <name> [flags]`.

  strategies  X-X-mono vs X-Y vs hybrid (alpha = 0.5), both directions (XQuAD-R -> MLQA-R and
              MLQA-R -> XQuAD-R), plus the untrained model.
  ratio       alpha in {0, .25, .5, .75, 1} (cross = 1 - alpha) and mixed-batch fractions, trained
              on XQuAD-R, evaluated on MLQA-R; loss curves per batch type and final accuracy.
  languages   1, 2, 4 and all training languages; seen and unseen evaluation languages apart.

Runs execute in this process; each prints the two commands that repeat it by hand:
  python -m hybrid_ir.train --config configs/experiments/base.py:<arg> --workdir <workdirs>/<run>
  python -m hybrid_ir.eval  --config configs/experiments/base.py:<arg> --workdir <workdirs>/<run> --once
Its small summary (metrics, per-language rows, matrices, per-query vectors for paired tests, loss
curve, wall time) goes to `<results>/<name>/<run>.json`; `python -m hybrid_ir.report <name>` turns
those into tables and plots without rerunning anything. Finished runs are skipped on a rerun.
"""
import dataclasses
import json
import os
import pathlib
import platform
import time

from absl import app
from absl import flags
from absl import logging

from hybrid_ir import report



def define_flags() -> None:
  """The runner's flags, defined only when run as a program (see hybrid_ir.train.define_flags)."""
  flags.DEFINE_enum("model", "use-m3", ["use-m3", "e5-small"], "Encoder of every run.")
  flags.DEFINE_integer("steps", 150, "Training steps per run.")
  flags.DEFINE_integer("batch", 32, "Global batch size.")
  flags.DEFINE_enum("size", "full", ["full", "mini"], "mini: a tiny random BERT, for tests.")
  flags.DEFINE_string("results", "results", "Where run summaries go (<results>/<name>/).")
  flags.DEFINE_string("workdirs", "workdirs/experiments", "Where run workdirs go.")
  flags.DEFINE_list("only", [], "Run only these run names.")
  flags.DEFINE_list("directions", ["xquad-r", "mlqa-r"],
                    "Training sets for `strategies` (evaluation is on the other).")


CONFIG = "configs/experiments/base.py"
STRATEGIES = {"mono": (1.0, 0.0, 0.0), "cross": (0.0, 1.0, 0.0), "hybrid": (0.5, 0.5, 0.0)}


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  args: dict  # the config arg's key=values (see configs/experiments/base.py)
  pretrained: bool = False  # evaluate the untrained model instead of training

  def config_arg(self, common: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in {**common, **self.args}.items())


def _mix(mono, cross, mixed=0.0) -> dict:
  return dict(mono=mono, cross=cross, mixed=mixed)


def runs(name: str, directions=("xquad-r", "mlqa-r")) -> list[Run]:
  """The grid of experiment `name`."""
  if name == "strategies":
    out = []
    for train in directions:
      out.append(Run(f"{train}-pretrained", dict(train=train), pretrained=True))
      out += [Run(f"{train}-{s}", dict(train=train, **_mix(*p))) for s, p in STRATEGIES.items()]
    return out
  if name == "ratio":
    out = [Run("pretrained", dict(train="xquad-r"), pretrained=True)]
    out += [Run(f"alpha{a:g}", dict(train="xquad-r", **_mix(a, 1 - a)))
            for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    out += [Run(f"mixed{m:g}", dict(train="xquad-r", **_mix((1 - m) / 2, (1 - m) / 2, m)))
            for m in (0.5, 1.0)]
    return out
  if name == "languages":
    # Nested subsets, English first; one language cannot make X-Y batches, so it trains mono.
    subsets = {1: "en", 2: "en+de", 4: "en+de+ar+zh", "all": "all"}
    out = [Run("pretrained", dict(train="xquad-r"), pretrained=True)]
    for n, langs in subsets.items():
      mix = _mix(1.0, 0.0) if n == 1 else _mix(0.5, 0.5)
      out.append(Run(f"langs{n}", dict(train="xquad-r", langs=langs, **mix)))
    return out
  raise ValueError(f"unknown experiment {name!r}; known: strategies, ratio, languages")


def execute(name: str, run: Run, common: dict, results: pathlib.Path, workdirs: pathlib.Path
            ) -> pathlib.Path:
  """Trains (unless pretrained) and evaluates one run in this process; writes its summary JSON."""
  from hybrid_ir import config_flags
  from hybrid_ir import eval as eval_lib
  from hybrid_ir import train as train_lib
  out = results / name / f"{run.name}.json"
  args = {**common, **run.args}
  if out.exists():
    done = json.loads(out.read_text()).get("args", {})
    differ = {k: (done.get(k), v) for k, v in args.items() if done.get(k) != v}
    if differ:
      raise ValueError(f"{out} holds run {run.name} with other settings (saved, wanted): {differ}; "
                       "pass another --results, or delete it to rerun")
    logging.info("%s exists; skipping run %s", out, run.name)
    return out
  # Keyed by the shared settings too: a workdir trained with another model or budget would be
  # resumed from, not replaced.
  workdir = workdirs / name / "_".join(str(v) for v in common.values()) / run.name
  spec = f"{CONFIG}:{run.config_arg(common)}"
  config = config_flags.load_config_file(spec)
  t0 = time.time()
  cli = f"--config '{spec}' --workdir {workdir}"
  if run.pretrained:
    print(f"+ python -m hybrid_ir.eval {cli} --pretrained", flush=True)
    eval_lib.run(config, workdir, pretrained=True)
    tag = "pretrained"
  else:
    print(f"+ python -m hybrid_ir.train {cli}\n+ python -m hybrid_ir.eval {cli} --once", flush=True)
    train_lib.train(config, workdir)
    tag = eval_lib.run(config, workdir, once=True)[-1]
  summary = report.summarize_run(workdir, tag)
  summary.update(run=run.name, experiment=name, config=spec, args=args,
                 wall_seconds=time.time() - t0,
                 hardware=f"{platform.machine()} CPU x{os.cpu_count()}")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(summary))
  return out


def main(argv) -> None:
  if len(argv) != 2:
    raise app.UsageError("usage: python -m hybrid_ir.experiments {strategies,ratio,languages}")
  name, f = argv[1], flags.FLAGS
  common = dict(model=f.model, steps=f.steps, batch=f.batch, size=f.size)
  grid = runs(name, tuple(f.directions))
  if f.only:
    unknown = set(f.only) - {r.name for r in grid}
    if unknown:
      raise app.UsageError(f"--only {sorted(unknown)}: not runs of {name}; "
                           f"runs: {[r.name for r in grid]}")
    grid = [r for r in grid if r.name in f.only]
  results, workdirs = pathlib.Path(f.results), pathlib.Path(f.workdirs)
  for run in grid:
    execute(name, run, common, results, workdirs)
  print(report.write_report(name, results / name))


if __name__ == "__main__":
  define_flags()
  app.run(main)
