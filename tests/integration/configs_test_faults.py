"""tests/integration/test_faults.py's run: the tiny train config (tests/configs_test_train.py)
for 15 steps, a checkpoint every 5 (all kept), a metrics row per step, and a small MLQA-R
evaluator (de, zh) for the eval binary.

  python -m hybrid_ir.train --config tests/integration/configs_test_faults.py --workdir /tmp/f
  python -m hybrid_ir.eval --config tests/integration/configs_test_faults.py --workdir /tmp/f --once

`:long_eval` evaluates every MLQA-R language instead, an evaluation long enough to be interrupted.
"""
import pathlib

import ml_collections

from hybrid_ir import config_flags

HERE = pathlib.Path(__file__).resolve().parent
TESTS = HERE.parent


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "long_eval"):
    raise ValueError(f"tests/integration/configs_test_faults.py: arg {arg!r}; "
                     "known: long_eval")
  c = config_flags.load_config_file(str(TESTS / "configs_test_train.py"))
  c.total_steps, c.log_every = 15, 1
  c.checkpoint.update(every=5, keep=10)
  data = str(pathlib.Path(c.input.sources[0]["path"]).parent)  # the XQuAD-R source's data dir
  c.evals = {"mlqa-r": dict(type="lareqa", dataset="mlqa-r", data_dir=data, langs=("de", "zh") if not arg else None,
                            candidate_text="sentence")}
  c.eval_batch_size = 256
  return c
