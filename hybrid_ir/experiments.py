r"""The paper's experiments as grids of runs: `python -m hybrid_ir.experiments <name> [flags]`.

  python -m hybrid_ir.experiments strategies --model use-m3 --steps 150 --batch 32 \
      --results results/use_m3

  strategies  X-X-mono vs X-Y vs hybrid (alpha = 0.5), both directions (XQuAD-R -> MLQA-R and
              MLQA-R -> XQuAD-R), plus the untrained model.
  ratio       alpha in {0, .25, .5, .75, 1} (cross = 1 - alpha) and mixed-batch fractions, trained
              on XQuAD-R, evaluated on MLQA-R; loss curves per batch type and final accuracy.
  languages   1, 2, 4 and all training languages; seen and unseen evaluation languages apart.
  recipe      hybrid batches with the recipe's ingredients added one at a time (an ablation).
  ingredients each ingredient alone on top of the base hybrid run, paired against it.
  table       the token-embedding table trained densely, lazily or not at all (its mAP cost).
  languages_v2 X-X-mono, X-Y and hybrid at 2, 4, 7 and 11 training languages, two language sets
              or training seeds each, at one budget (the e5 recipe's 300 steps of 32, its
              temperature and packing, no bitext); then MLQA-R -> XQuAD-R at 2, 4 and 7
              (--directions xquad-r leaves those out). Its report (hybrid_ir.report's
              languages_v2 command) is the scaling analysis: slopes in log k per strategy and
              their differences.
  methods     hybrid against the other ways to align languages: hybrid, hybrid +
              distillation, X-X-mono + distillation, distillation alone and the untrained
              model, each also with LSAR and with the validation-selected checkpoint; 3 seeds
              on XQuAD-R, 2 on MLQA-R (its runs carry their seeds: leave --seeds alone).
  lsar        the untrained model with language-subspace removal at ranks 1, 2, 4, ... up to
              every direction its training languages span: which rank, before any training.

  python -m hybrid_ir.experiments languages_v2 --model e5-small --steps 300 --batch 32 \
      --results results/e5_small

--set key=value,... gives every run of a grid more grid args (e.g. negatives=3,table=lazy).
The grids themselves are `hybrid_ir.grids.runs`. Each run is the config file
configs/experiments/base.py (part of the repository, not of the pip package: run from a checkout,
or point --base_config at one) with that run's arg.

Each run prints the two commands that repeat it by hand; the first (training) runs as a child
process (`run_trainer`), evaluation in this process:
  python -m hybrid_ir.train --config configs/experiments/base.py:<arg> --workdir <workdirs>/<run>
  python -m hybrid_ir.eval  --config configs/experiments/base.py:<arg> --workdir <workdirs>/<run> --once
Its small summary (metrics, per-language rows, matrices, per-query vectors for paired tests, loss
curve, wall time) goes to `<results>/<name>/<run>.json`; a run with a validation split
(`--set validation=<points>`) also gets the best step's results by the held-out loss (`best`,
`selection`, `validation_curve`; see `evaluate_selected`), the last step's staying the
summary's own. A run with `lsar=<rank>` is evaluated a second time with that LSAR rank
(`evaluate_lsar`; output in <workdir>/eval_lsar/, so the plain eval/<tag>.json stays), saved as
the summary's `lsar` (its own `datasets`, and `best` with a validation split). With
distillation on (`distill=<weight>`), the MSE term's curve per batch type is the summary's
`distill_curve`. `python -m hybrid_ir.report <name>
--results <results>` turns those into tables and plots without rerunning anything. Finished runs
are skipped on a rerun.
"""
import copy
import json
import os
import pathlib
import sys
import time

from absl import app
from absl import flags
from absl import logging

from hybrid_ir import grids
from hybrid_ir import hardware
from hybrid_ir import report

CONFIG = "configs/experiments/base.py"
# Where a run's LSAR evaluation writes (eval.py's --output_dir): apart from eval/, whose
# <tag>.json of the same step holds the plain results.
LSAR_EVAL = "eval_lsar"


def define_flags() -> None:
  """The runner's flags, defined only when run as a program (see hybrid_ir.train.define_flags)."""
  flags.DEFINE_enum("model", "use-m3", list(grids.MODELS), "Encoder of every run.")
  flags.DEFINE_integer("steps", 150, "Training steps per run.")
  flags.DEFINE_integer("batch", 32, "Global batch size.")
  flags.DEFINE_enum("size", "full", list(grids.SIZES), "mini: a tiny random BERT, for tests.")
  flags.DEFINE_string("results", "results", "Where run summaries go (<results>/<name>/).")
  flags.DEFINE_string("workdirs", "workdirs/experiments", "Where run workdirs go.")
  flags.DEFINE_list("only", [], "Run only these run names.")
  flags.DEFINE_list("seeds", ["0"], "Training seeds of every trained run (run names get "
                    "-seed<k> for k > 0); the report gives mean +- sd over seeds and CIs that "
                    "cover seed and query variance.")
  flags.DEFINE_list("directions", ["xquad-r", "mlqa-r"],
                    "Training sets of the grids run in both directions (strategies, "
                    "languages_v2, methods, lsar); evaluation is on the other set.")
  flags.DEFINE_list("set", [], "Grid-arg key=values given to every run of the grid (keys of "
                    "hybrid_ir.grids.DEFAULTS, e.g. negatives=3,table=lazy: a recipe under another "
                    "experiment; a run's own args win); they key the workdirs, so use a "
                    "--results of their own.")
  flags.DEFINE_string("base_config", None, f"The experiment config file (default: {CONFIG} in "
                      "the current directory or in the checkout the package runs from).")


# The grids live in the library (the report reads them too); these names stay importable here.
Run, runs, STRATEGIES = grids.Run, grids.runs, grids.STRATEGIES


def find_config(path: str | None = None) -> pathlib.Path:
  """The experiment config file: `path` (--base_config) if given, else CONFIG under the current
  directory, else CONFIG in the checkout this package runs from (an editable install).

  `pip install .` installs the library without `configs/` (plain data files of the repository),
  so a non-editable install needs a checkout's file: the error says so.
  """
  if path:
    if not pathlib.Path(path).is_file():
      raise FileNotFoundError(f"--base_config={path}: no such file")
    return pathlib.Path(path)
  candidates = [pathlib.Path(CONFIG), pathlib.Path(__file__).resolve().parents[1] / CONFIG]
  for c in candidates:
    if c.is_file():
      return c
  raise FileNotFoundError(
      f"the experiment config {CONFIG} is not in {os.getcwd()} nor next to the installed package "
      f"({candidates[1].parents[2]}): configs/ is part of the repository, not of the pip package. "
      "Run from a checkout's root, or pass --base_config=<checkout>/" + CONFIG)


def load_config(path: pathlib.Path, arg: str):
  """`get_config(arg)` of the config file at `path`, whose `from configs import common` needs the
  checkout root (the first folder above it that is not a package) on sys.path."""
  from hybrid_ir import config_flags
  root = path.resolve().parent
  while (root / "__init__.py").is_file():
    root = root.parent
  if str(root) not in sys.path:
    sys.path.append(str(root))
  return config_flags.load_config_file(f"{path}:{arg}")


def shared_args(model: str, steps: int, batch: int, size: str, extra: list[str] = ()) -> dict:
  """The args every run of a grid gets: the flags', plus --set's key=values (checked and typed
  by grids.parse; a key the flags already set is refused)."""
  common = dict(model=model, steps=steps, batch=batch, size=size)
  parsed = grids.parse(",".join(extra))
  keys = [item.partition("=")[0] for item in extra]
  clash = [k for k in keys if k in common]
  if clash:
    raise ValueError(f"--set {clash}: set by their own flags (--{', --'.join(clash)})")
  return dict(common, **{k: parsed[k] for k in keys})


class Interrupted(RuntimeError):
  """A run's training stopped before its last step (a signal); the grid stops there."""


class TrainerFailed(RuntimeError):
  """The training binary of a run exited with an error (its message is in its output)."""


def run_trainer(spec: str, workdir: pathlib.Path, run_name: str = "",
                overrides: tuple[str, ...] = ()) -> None:
  """Trains one run with the training binary in a child process: `python -m hybrid_ir.train
  --config <spec> --workdir <workdir> [overrides]`, the command the run prints.

  Inputs: the config spec (`file:arg`), the workdir, and extra `--config.x=y` overrides.
  A child, not a call: each run starts with a fresh process (no device memory or compiled
  programs held over from the last run) and the binary's own exit handling. It imports this
  package (PYTHONPATH), so it runs the same code as the grid. SIGINT and SIGTERM sent to the grid
  are passed on to it, once each, and the grid waits while it saves (the child has its own
  session, so a terminal's Ctrl-C does not reach it twice: a second Ctrl-C still aborts it).
  Returns when it exits 0, which it also does when stopped by a signal (the caller reads
  `finished.json`); raises TrainerFailed otherwise.
  """
  import signal
  import subprocess
  import threading
  cmd = [sys.executable, "-m", "hybrid_ir.train", "--config", spec, "--workdir", str(workdir),
         *overrides]
  env = dict(os.environ)
  root = str(pathlib.Path(__file__).resolve().parents[1])
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
  child = subprocess.Popen(cmd, env=env, start_new_session=True)

  def pass_on(signum, frame):
    del frame
    child.send_signal(signum)

  previous = {}
  if threading.current_thread() is threading.main_thread():  # signal's rule
    previous = {s: signal.signal(s, pass_on) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    code = child.wait()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  if code != 0:
    log = workdir / "train.INFO"
    where = f"; log: {log}" if log.is_file() else ""
    raise TrainerFailed(f"{run_name or workdir}: the trainer exited with {code} (its error is "
                        f"above{where}): {subprocess.list2cmdline(cmd)}")


def execute(name: str, run: Run, common: dict, results: pathlib.Path, workdirs: pathlib.Path,
            config_path: str | os.PathLike | None = None) -> pathlib.Path:
  """Trains one run (unless pretrained; `run_trainer`, a child process) and evaluates it in this
  process; writes its summary JSON.

  config_path: the experiment config file (default: `find_config()`).
  """
  from hybrid_ir import checkpoint
  from hybrid_ir import evaluation
  from hybrid_ir import run_dir
  out = results / name / f"{run.name}.json"
  args = {**common, **run.args}  # a run's own args win (recipe6's steps, strategies' mono/cross)
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
  path = find_config(config_path)
  spec = f"{path}:{run.config_arg(common)}"
  config = load_config(path, run.config_arg(common))
  lsar_settings = grids.lsar_eval(grids.parse(run.config_arg(common)))
  t0 = time.time()
  cli = f"--config '{spec}' --workdir {workdir}"
  selected = None
  if run.pretrained:
    if not config.get("cache_dir"):
      # The untrained model's embeddings, kept for every untrained run of the grids (entries are
      # keyed by the params and encoding settings): the lsar grid evaluates it once per rank.
      with config.unlocked():
        config.cache_dir = str(workdirs / "embeddings")
    print(f"+ python -m hybrid_ir.eval {cli} --pretrained", flush=True)
    evaluation.run(config, workdir, pretrained=True)
    tag = "pretrained"
    tags = [tag]
  else:
    # With config.selection, eval without --once evaluates every kept checkpoint: the best step
    # by the validation metric and the last one.
    once = "" if config.get("selection") else " --once"
    print(f"+ python -m hybrid_ir.train {cli}\n+ python -m hybrid_ir.eval {cli}{once}", flush=True)
    run_trainer(spec, workdir, run.name)
    # The trainer also exits after a SIGTERM/Ctrl-C, with a checkpoint short of the last step:
    # summarising that one would report a partly trained run as the run.
    finished = run_dir.read_finished(workdir)
    if not finished or finished["step"] != config.total_steps:
      raise Interrupted(f"{run.name}: training stopped at step "
                        f"{checkpoint.latest_finished_step(workdir)} of {config.total_steps} "
                        f"(in {workdir}); no summary written. Rerun the same command to resume.")
    if config.get("selection"):
      selected = evaluate_selected(config, workdir, finished["step"], run.name)
      tag = f"step_{finished['step']}"
      tags = [selected["best"]["tag"], tag]
    else:
      tag = evaluation.run(config, workdir, once=True)[-1]
      tags = [tag]
  summary = report.summarize_run(workdir, tag)
  if selected is not None:
    summary.update(selected)
  if lsar_settings is not None:
    lsar_cli = (f"{cli} --output_dir {workdir / LSAR_EVAL} --config.model.lsar.rank="
                f"{lsar_settings['rank']} --config.model.lsar.source={lsar_settings['source']}")
    print(f"+ python -m hybrid_ir.eval {lsar_cli}"
          + (" --pretrained" if run.pretrained else "" if selected else " --once"), flush=True)
    summary["lsar"] = evaluate_lsar(config, workdir, lsar_settings, tags, run.name,
                                    pretrained=run.pretrained)
  summary.update(run=run.name, experiment=name, config=spec, args=args,
                 wall_seconds=time.time() - t0,
                 hardware=hardware.describe())
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(summary))
  return out


def evaluate_selected(config, workdir: pathlib.Path, last: int, run_name: str = "") -> dict:
  """Evaluates the best step by `config.selection` ({metric, mode}; `hybrid_ir.selection` on
  the run's metrics.jsonl) and the last step; returns the summary's part for them:
    selection: {metric, mode, step (the best), value, last_step, curve [[step, value]]},
    best: {tag, datasets (as `report.summarize_run`'s, of the best step)},
    validation_curve: every metric of the selection metric's evaluator per evaluated step.
  The last step's results are the summary's own (`report.summarize_run`). Both steps are
  evaluated by eval.py's polling loop, which evaluates every kept checkpoint (the trainer keeps
  the latest and the best: `checkpoint.make_manager(keep_best=...)`). Raises RuntimeError naming
  the step when the best or last step has no checkpoint or no evaluation.
  """
  from hybrid_ir import checkpoint
  from hybrid_ir import evaluation
  from hybrid_ir import run_dir
  from hybrid_ir import selection
  sel = config.selection
  rows = run_dir.read_metrics(workdir)
  best = selection.best_step(rows, sel.metric, sel.get("mode"))
  kept = checkpoint.finished_steps(workdir)
  missing = sorted({best.step, last} - set(kept))
  if missing:
    raise RuntimeError(
        f"{run_name}: step(s) {missing} (best by {best.metric}: {best.step}, last: {last}) have "
        f"no checkpoint in {checkpoint.checkpoint_dir(workdir)} (kept: {kept}); the trainer "
        f"keeps the best with checkpoint.make_manager(keep_best={best.metric!r})")
  evaluation.run(config, workdir, poll_seconds=0, max_idle_seconds=0)
  for step in (best.step, last):
    if not (workdir / "eval" / f"step_{step}.json").exists():
      raise RuntimeError(f"{run_name}: checkpoint {step} could not be evaluated (see the eval "
                         f"log in {workdir / 'eval'}); no summary written")
  prefix = best.metric.rsplit("/", 1)[0] + "/"
  curve = [{k: v for k, v in r.items() if k == "step" or (k.startswith(prefix) and
                                                          not k.endswith("eval_seconds"))}
           for r in rows if best.metric in r]
  return {"selection": {"metric": best.metric, "mode": best.mode, "step": best.step,
                        "value": best.value, "last_step": last,
                        "curve": [list(p) for p in selection.curve(rows, best.metric)]},
          "best": {"tag": f"step_{best.step}",
                   "datasets": report.summarize_run(workdir, f"step_{best.step}")["datasets"]},
          "validation_curve": curve}


def evaluate_lsar(config, workdir: pathlib.Path, settings: dict, tags: list[str],
                  run_name: str = "", pretrained: bool = False) -> dict:
  """Evaluates the run's models (`tags`: the best step's then the last's, one tag without a
  validation split, or ['pretrained']) again with LSAR; returns the summary's `lsar` part:
    rank, source (`settings`, from `grids.lsar_eval`); tag, datasets (the last tag's, as
    `report.summarize_run`'s); best: {tag, datasets} when `tags` holds a best step besides the
    last; subspace: {langs, counts, singular_values} the last model's LSAR was estimated from.

  The evaluation sets only (the LAReQA evals; a validation or parallel-curve evaluator would
  repeat what the plain evaluation measured), written to <workdir>/eval_lsar/ (LSAR_EVAL) so
  that the plain eval/<tag>.json of the same step stays. The subspace of each model is kept in
  <workdir>/lsar/ (`hybrid_ir.lsar`). Raises RuntimeError naming a tag that got no evaluation.
  """
  import ml_collections

  from hybrid_ir import evaluation
  from hybrid_ir import lsar
  cfg = copy.deepcopy(config)
  cfg.model.lsar = dict(lsar.DEFAULTS, **settings)
  cfg.evals = ml_collections.ConfigDict(
      {n: e.to_dict() for n, e in config.evals.items() if e.get("type") == "lareqa"})
  out = workdir / LSAR_EVAL
  if pretrained:
    evaluation.run(cfg, workdir, pretrained=True, output_dir=str(out))
  elif len(tags) > 1:  # every kept checkpoint: the best step and the last
    evaluation.run(cfg, workdir, output_dir=str(out), poll_seconds=0, max_idle_seconds=0)
  else:
    evaluation.run(cfg, workdir, once=True, output_dir=str(out))
  missing = [t for t in tags if not (out / f"{t}.json").exists()]
  if missing:
    raise RuntimeError(f"{run_name}: {missing} could not be evaluated with LSAR (see the eval "
                       f"log in {out}); no summary written")
  subspace = json.loads((out / f"{tags[-1]}.json").read_text())["lsar"]
  result = {**settings, "tag": tags[-1],
            "datasets": report.summarize_run(workdir, tags[-1], LSAR_EVAL)["datasets"],
            "subspace": {k: subspace[k] for k in ("langs", "counts", "singular_values")}}
  if len(tags) > 1:
    result["best"] = {"tag": tags[0],
                      "datasets": report.summarize_run(workdir, tags[0], LSAR_EVAL)["datasets"]}
  return result


def main(argv) -> None:
  if len(argv) != 2 or argv[1] not in grids.EXPERIMENTS:
    raise app.UsageError("usage: python -m hybrid_ir.experiments "
                         f"{{{','.join(grids.EXPERIMENTS)}}} [flags] (got {argv[1:]}); --help "
                         "lists the flags")
  name, f = argv[1], flags.FLAGS
  try:
    config_path = find_config(f.base_config)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from e
  try:
    common = shared_args(f.model, f.steps, f.batch, f.size, f.set)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  seeds = [int(x) for x in f.seeds]
  if name in grids.OWN_SEEDS and seeds != [0]:
    raise app.UsageError(f"--seeds {','.join(f.seeds)}: the {name} grid carries its own "
                         "training seeds (hybrid_ir.grids); leave --seeds out")
  grid = grids.with_seeds(runs(name, tuple(f.directions)), seeds)
  if f.only:
    unknown = set(f.only) - {r.name for r in grid}
    if unknown:
      raise app.UsageError(f"--only {sorted(unknown)}: not runs of {name}; "
                           f"runs: {[r.name for r in grid]}")
    grid = [r for r in grid if r.name in f.only]
  for run in grid:  # a rank the run's training languages cannot carry: refused before any run
    try:
      grids.lsar_eval(grids.parse(run.config_arg(common)))
    except ValueError as e:
      raise app.UsageError(f"run {run.name}: {e}") from e
  results, workdirs = pathlib.Path(f.results), pathlib.Path(f.workdirs)
  for run in grid:
    try:
      execute(name, run, common, results, workdirs, config_path)
    except (Interrupted, TrainerFailed) as e:
      sys.exit(f"hybrid_ir.experiments: {e}")
  print(report.write_report(name, results / name))


if __name__ == "__main__":
  define_flags()
  try:
    app.run(main)
  except SystemExit as e:  # absl exits 1 after printing --help; asking for help is no failure
    if e.code == 1 and {"--help", "-h", "-?", "--helpshort", "--helpfull"} & set(sys.argv[1:]):
      sys.exit(0)
    raise
