"""run_dir.py: the workdir lease, the metrics file on resume, and interruptible evaluations."""
import json
import os
import signal
import socket
import time

import pytest

from hybrid_ir import run_dir


def write_lease(workdir, **fields):
  record = {"host": socket.gethostname(), "pid": os.getpid(), "started": "then", "token": "other",
            "heartbeat": time.time(), **fields}
  (workdir / run_dir.LEASE).write_text(json.dumps(record))
  return record


def test_a_lease_is_exclusive_and_released(tmp_path):
  with run_dir.Lease(tmp_path) as first:
    record = json.loads((tmp_path / run_dir.LEASE).read_text())
    assert (record["pid"], record["token"]) == (os.getpid(), first.token)
    with pytest.raises(run_dir.LeaseHeldError, match=rf"in use by another trainer .*pid {os.getpid()}"):
      run_dir.Lease(tmp_path).acquire()
  assert not (tmp_path / run_dir.LEASE).exists()
  with run_dir.Lease(tmp_path) as again:  # free again
    assert again.took_over is None


def test_a_live_lease_of_another_host_is_refused(tmp_path):
  write_lease(tmp_path, host="tpu-vm-7", pid=12345)
  with pytest.raises(run_dir.LeaseHeldError, match="host tpu-vm-7, pid 12345"):
    run_dir.Lease(tmp_path, heartbeat_seconds=30).acquire()
  assert json.loads((tmp_path / run_dir.LEASE).read_text())["host"] == "tpu-vm-7"  # untouched


def test_a_silent_lease_of_another_host_is_taken_over(tmp_path):
  write_lease(tmp_path, host="tpu-vm-7", pid=12345, heartbeat=time.time() - 121)
  with run_dir.Lease(tmp_path, heartbeat_seconds=30, stale_after=4) as lease:
    assert "host tpu-vm-7" in lease.took_over and "no heartbeat for 12" in lease.took_over
    assert json.loads((tmp_path / run_dir.LEASE).read_text())["token"] == lease.token
  assert sorted(os.listdir(tmp_path)) == []  # no stale copies left behind


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
  pid = os.fork()
  if pid == 0:
    os._exit(0)
  os.waitpid(pid, 0)
  write_lease(tmp_path, pid=pid)  # fresh heartbeat, but the process is gone
  with run_dir.Lease(tmp_path) as lease:
    assert f"its process {pid} is no longer running" in lease.took_over


def test_a_trainer_whose_lease_was_taken_over_stops_writing(tmp_path):
  lease = run_dir.Lease(tmp_path, heartbeat_seconds=0.05).acquire()
  try:
    lease.check()  # still ours
    # Taken over while this one was suspended. A heartbeat written in the same instant can win
    # the file back (then the other trainer is the one that stops): write it until it holds.
    for _ in range(100):
      write_lease(tmp_path, host="tpu-vm-7", pid=1)
      if lease._lost.wait(0.3):  # pylint: disable=protected-access  (the heartbeat noticed)
        break
    with pytest.raises(run_dir.LeaseLostError, match="another trainer took this workdir over"):
      lease.check()
  finally:
    lease.release()
  assert json.loads((tmp_path / run_dir.LEASE).read_text())["host"] == "tpu-vm-7"  # not ours to remove


def test_the_heartbeat_is_renewed(tmp_path):
  with run_dir.Lease(tmp_path, heartbeat_seconds=0.05):
    first = json.loads((tmp_path / run_dir.LEASE).read_text())["heartbeat"]
    for _ in range(600):  # up to 30 s of 0.05 s heartbeats
      if json.loads((tmp_path / run_dir.LEASE).read_text())["heartbeat"] != first:
        break
      time.sleep(0.05)
    else:
      pytest.fail("the heartbeat was not renewed")


def rows(*steps):
  return "".join(json.dumps({"step": s, "train/loss": 1.0}) + "\n" for s in steps)


def test_resumable_metrics_drops_later_steps_and_cuts_a_torn_last_line(tmp_path):
  path = tmp_path / run_dir.METRICS
  path.write_text(rows(1, 2, 3, 4) + '{"step": 5, "tr')
  kept, notes = run_dir.resumable_metrics(path, start=3)
  assert "".join(kept) == rows(1, 2, 3)
  assert any(f"{path}:5: cut a torn last line" in n for n in notes), notes
  assert any("dropped 1 rows after step 3" in n for n in notes), notes


def test_resumable_metrics_names_damage_before_the_last_line(tmp_path):
  path = tmp_path / run_dir.METRICS
  path.write_text(rows(1) + "garbage\n" + rows(2))
  with pytest.raises(run_dir.MetricsFileError, match=rf"{path}:2: not a metrics row"):
    run_dir.resumable_metrics(path, start=2)


def test_a_stop_request_interrupts_only_inside_interruptible():
  with run_dir.StopRequests() as stops:
    with pytest.raises(run_dir.Interrupted):
      with stops.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at once
    assert stops.signal == "SIGTERM"
  with run_dir.StopRequests() as stops:
    os.kill(os.getpid(), signal.SIGTERM)  # outside: only recorded
    assert stops.signal == "SIGTERM"
    with pytest.raises(run_dir.Interrupted):  # and an evaluation after it does not start
      with stops.interruptible():
        pass


def test_the_console_eta_leaves_out_the_first_window_which_holds_the_compile(capsys):
  console = run_dir.Console(active=True)
  console.progress(10, 100, {"mono": 2.0}, step_seconds=30.0)  # compile in this window
  console.progress(20, 100, {"mono": 1.9}, step_seconds=2.0)
  lines = capsys.readouterr().err.splitlines()
  assert lines[0].endswith("ETA after warm-up"), lines
  assert lines[1].endswith("ETA 00:02:40"), lines  # 80 steps left at the steady 2 s/step
