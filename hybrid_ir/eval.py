"""Evaluates a training workdir's checkpoints as they appear, or a pretrained model untrained.

  python -m hybrid_ir.eval --config configs/demo.py --workdir W              # poll W's checkpoints
  python -m hybrid_ir.eval --config configs/demo.py --workdir W --once       # latest good one
  python -m hybrid_ir.eval --config configs/e5_small.py --workdir W --pretrained

The config's `model` builds the encoder (and, for checkpoints, the abstract restore target);
its `evals` name the evaluators (`type`: a key of `hybrid_ir.evaluators.TYPES`), built once.
For each evaluated model it prints the table, then writes `<out>/<tag>.json` (every metric,
counts, per-query arrays) and `<out>/<tag>.md` (the table), where tag is `step_<N>` or
`pretrained` and <out> is --output_dir (default W/eval), checked writable before anything is
evaluated; the log goes to <out>/eval.INFO.

Checkpoints: only finished ones are read, and each restore is verified (`hybrid_ir.checkpoint`).
One that is deleted while it is read (a trainer's keep-N) or damaged is skipped, said so, and
counted in the summary printed at the end; --once takes the newest good one, naming any newer
damaged one.
Polling ends when the trainer is done: its `finished.json` marker is there, or the config saved
with the newest checkpoint says that step is its last (`total_steps`), and every checkpoint has
been seen; else after --max_idle_seconds without a new checkpoint. SIGINT (Ctrl-C) and SIGTERM
stop it with the summary and no traceback (exit 130 and 0).

LSAR (config.model.lsar: a rank and a training source, see `hybrid_ir.lsar` and
docs/evaluation.md): each evaluated model's language subspace is estimated from that source once,
kept in <workdir>/lsar/<tag>-<key>.npz (read again by later runs, search and export), and
projected out inside the encoder; the `lsar` field of <tag>.json names it.
"""
import signal
import sys

from absl import flags

from hybrid_ir import config_flags
from hybrid_ir import evaluation


def define_flags() -> None:
  """The binary's flags; defined only when run as a program (see hybrid_ir.train.define_flags)."""
  config_flags.define_config()
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/), or output dir.")
  flags.DEFINE_string("output_dir", None, "Where results go (default <workdir>/eval).")
  flags.DEFINE_bool("once", False, "Evaluate the latest good checkpoint and exit.")
  flags.DEFINE_bool("pretrained", False, "Evaluate the config's model as loaded, no checkpoint.")
  flags.DEFINE_float("poll_seconds", 30.0, "Seconds between checkpoint scans.")
  flags.DEFINE_float("max_idle_seconds", 3600.0,
                     "Stop polling after this long without a new checkpoint.")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  config_flags.require("workdir")

  def stop(signum, frame):
    del frame
    raise evaluation.Stopped(signal.Signals(signum).name)

  signal.signal(signal.SIGINT, stop)
  signal.signal(signal.SIGTERM, stop)
  try:
    done = evaluation.run(f.config, f.workdir, pretrained=f.pretrained, once=f.once,
                          output_dir=f.output_dir, log_file=True, poll_seconds=f.poll_seconds,
                          max_idle_seconds=f.max_idle_seconds)
  except evaluation.Stopped as e:  # during set-up, before polling
    sys.exit(130 if e.signame == "SIGINT" else 0)
  if getattr(done, "stopped_by", "") == "SIGINT received":
    sys.exit(130)  # the shell's convention for Ctrl-C: a script running eval stops too


if __name__ == "__main__":
  define_flags()
  config_flags.run(main)
