"""benchmarks/accelerator.sh, the one call that measures a lent accelerator (issue 15): it runs
bench_train.py in bf16 with the arguments it is given last, and keeps the log under the device's
name."""
import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_accelerator_script_runs_bench_train_in_bf16_and_logs_under_the_device_name(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable, PEAK_GFLOPS="256", OUT=str(tmp_path))
  run = subprocess.run(
      [str(REPO / "benchmarks" / "accelerator.sh"), "--models", "mini", "--batch", "8",
       "--steps", "1", "--q_len", "16", "--p_len", "8"],
      env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  log = (tmp_path / "cpu.log").read_text()
  assert "8 queries x 16 tokens + 8 passages x 8; peak 256 GFLOP/s" in log
  row = re.search(r"^mini +bfloat16 .*%$", log, re.M)
  assert row, log
  assert "xlmr" not in log  # the later --models replaced the script's own


def test_accelerator_script_refuses_to_run_without_a_peak(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "PEAK_GFLOPS"}
  run = subprocess.run([str(REPO / "benchmarks" / "accelerator.sh")],
                       env=dict(env, PYTHON=sys.executable, OUT=str(tmp_path)),
                       capture_output=True, text=True, timeout=600)
  assert run.returncode != 0 and "set PEAK_GFLOPS" in run.stderr
