"""The run directory (`--workdir`) as a trainer and an evaluator share it: what is in it besides
the checkpoints, who may write it, and what a person at the console sees.

  lease.json       who is training here now: host, pid, start time and a heartbeat (`Lease`);
                   one trainer per workdir. The evaluator only reads and never takes it.
  metrics.jsonl    one JSON row per logged step (`MetricWriter`); cut back to the resume step
                   on resume; a torn last line (a crash, a full disk) is cut with a message.
  train.INFO       the log (`HeldLog`): everything the console does not show, tracebacks too.
  finished.json    written when the run completed (`write_finished`); the evaluator's signal
                   that no step follows.
Related: `hybrid_ir.checkpoint` (checkpoints/ and corrupt_checkpoints/).
"""
import contextlib
import datetime
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid

from etils import epath

from hybrid_ir import hardware

FINISHED = "finished.json"
LEASE = "lease.json"
METRICS = "metrics.jsonl"


class WorkdirError(ValueError):
  """A --workdir that cannot serve: a file, not creatable, not writable, or missing."""


# ------------------------------------------------------------------------------------------------
# The run directory.
# ------------------------------------------------------------------------------------------------

def check_workdir(workdir: str | os.PathLike, *, create: bool, writable: bool = True,
                  flag: str = "--workdir") -> epath.Path:
  """The workdir as an epath, after checks whose errors say what is wrong with which path.

  Inputs: create (make it, with parents, if missing; else it must exist), writable (probe it by
  writing and removing a file: a read-only mount or a permission fails here, before any work).
  Raises WorkdirError. Recommended for every binary before its first heavy step.
  """
  path = epath.Path(workdir)
  what = f"{flag}={workdir}"
  try:
    if path.exists() and not path.is_dir():
      raise WorkdirError(f"{what} is a file, not a directory; pass a directory (it holds "
                         "checkpoints/, metrics.jsonl and eval/), or move the file away")
    if not path.exists():
      if not create:
        raise WorkdirError(f"{what} does not exist (nothing to read there); pass the directory "
                           "the trainer wrote to")
      path.mkdir(parents=True, exist_ok=True)
    if writable:
      probe = path / f".write_test.{os.getpid()}"
      probe.write_text("")
      probe.unlink()
  except WorkdirError:
    raise
  except (OSError, ValueError) as e:  # PermissionError, read-only file system, a file as parent
    reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
    raise WorkdirError(f"{what}: cannot {'write to' if path.is_dir() else 'create'} {path} "
                       f"({reason}); pass a directory you can write to") from None
  return path


class HeldLog(logging.Filter):
  """Holds INFO log records back until the log file is open, then writes them there.

  The first jax call runs JAX's backend probe, which logs 'Unable to initialize backend tpu'
  (and Orbax, TensorFlow log at INFO too); it has to come before the log file opens, since only
  then is it known whether this is process 0 (the one that writes it) and, for eval.py, whether
  the output directory can be written. Usage:
    with checkpoint.HeldLog() as log:
      ...                       # jax calls, checks
      log.to_file("eval", out)  # process 0, local directories: <out>/eval.INFO
  On leaving, the held records go to wherever the log goes then (the file, or stderr; on an
  error before the file opened, nowhere).
  """

  def __init__(self):
    super().__init__()
    self.records, self.path = [], None
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    self._handler = absl_logging.get_absl_handler()

  def filter(self, record):
    if record.levelno < logging.WARNING:
      self.records.append(record)
      return False
    return True

  def __enter__(self) -> "HeldLog":
    self._handler.addFilter(self)
    return self

  def to_file(self, program: str, directory: str | os.PathLike) -> str | None:
    """Sends the log to `<directory>/<program>.INFO` on process 0 for a local directory (absl then
    writes only FATAL to stderr); returns the path, or None (the log stays on stderr)."""
    import jax  # pylint: disable=g-import-not-at-top  (a heavy import; keeps --help fast)
    if jax.process_index() == 0 and "://" not in str(directory):
      self._handler.use_absl_log_file(program, str(directory))
      self.path = str(epath.Path(directory) / f"{program}.INFO")
    return self.path

  def __exit__(self, exc_type, *exc) -> None:
    self._handler.removeFilter(self)
    # Failing before a log file opened, the error is what matters on the console: the held
    # INFO chatter is dropped, not printed above it.
    if self.path is not None or exc_type is None:
      for record in self.records:
        self._handler.handle(record)
    self.records = []


def log_file() -> str | None:
  """The log file absl writes to, or None while the log is stderr."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  stream = absl_logging.get_absl_handler().python_handler.stream
  if stream in (sys.stderr, sys.__stderr__):
    return None
  return getattr(stream, "name", None)


def log_traceback(e: BaseException) -> str | None:
  """Writes `e` with its traceback to the log file; returns the file, or None without one."""
  path = log_file()
  if path is not None:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.error("%s", "".join(traceback.format_exception(e)))
  return path


def write_finished(workdir: str | os.PathLike, step: int) -> None:
  """Marks the run complete at `step` (its checkpoint is final): `<workdir>/finished.json`."""
  path = epath.Path(workdir) / FINISHED
  tmp = path.parent / f"{FINISHED}.tmp"
  tmp.write_text(json.dumps({"step": int(step), "time": datetime.datetime.now().isoformat()}))
  tmp.rename(path)


def read_finished(workdir: str | os.PathLike) -> dict | None:
  """`finished.json` of a completed run ({'step': N, 'time': ...}), or None (still running, died,
  or written before the marker existed)."""
  path = epath.Path(workdir) / FINISHED
  try:
    return json.loads(path.read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def clear_finished(workdir: str | os.PathLike) -> None:
  """Removes the marker: a resumed run with more steps is running again."""
  path = epath.Path(workdir) / FINISHED
  if path.exists():
    path.unlink()





class MetricsFileError(WorkdirError):
  """A metrics.jsonl damaged before its last line (a torn last line is cut instead)."""


def resumable_metrics(path: epath.Path, start: int) -> tuple[list[str], list[str]]:
  """(rows to keep, notes) of a metrics.jsonl that training resumes from `start`.

  Rows of steps after `start` (written before a crash or preemption, about to be recomputed)
  are dropped, so that no step appears twice. A last line that is not JSON (torn by a crash or a
  full disk) is cut, with a note; a bad line anywhere else raises MetricsFileError naming
  `file:line`, since cutting it would lose rows that training will not rewrite.
  """
  lines = path.read_bytes().decode("utf-8", errors="replace").splitlines(keepends=True)
  kept, notes = [], []
  for i, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      step = int(row["step"])
    except (ValueError, KeyError, TypeError) as e:
      if i == len(lines):
        notes.append(f"{path}:{i}: cut a torn last line ({len(line)} bytes, not a JSON row: "
                     f"{str(e).splitlines()[0]}), as a crash or a full disk leaves it")
        continue
      raise MetricsFileError(
          f"{path}:{i}: not a metrics row ({str(e).splitlines()[0]}): the file is damaged "
          "before its last line. Move it aside (training then starts a new one) or repair that "
          "line, and run the same command again") from None
    if step <= start:
      kept.append(line if line.endswith("\n") else line + "\n")
  dropped = sum(1 for l in lines if l.strip()) - len(kept) - len(notes)
  if dropped:
    notes.append(f"{path}: dropped {dropped} rows after step {start} (recomputed on resume)")
  return kept, notes


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  """The rows of `<workdir>/metrics.jsonl` ([] without one), a torn last line left out. For
  readers of a run (the report); related: `MetricWriter`, `resumable_metrics`."""
  path = epath.Path(workdir) / METRICS
  if not path.exists():
    return []
  kept, _ = resumable_metrics(path, start=2**62)
  return [json.loads(line) for line in kept]


class MetricWriter:
  """JSONL + TensorBoard, written by process 0 only.

  Inputs: the workdir; `start`, the step training (re)starts from (see `resumable_metrics`);
  `say`, where notes about the cut rows go (the console; default the log).
  """

  def __init__(self, workdir: epath.Path, start: int = 0, say=logging.info):
    import jax  # pylint: disable=g-import-not-at-top
    self.active = jax.process_index() == 0
    if self.active:
      path = workdir / METRICS
      if path.exists():
        kept, notes = resumable_metrics(path, start)
        if notes:
          tmp = path.parent / f"{METRICS}.tmp"
          tmp.write_text("".join(kept))
          tmp.replace(path)  # atomic: a crash here leaves the old file or the new one
          for note in notes:
            say(note)
      self.jsonl = path.open("a")
      try:
        import tensorboardX
        self.tb = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))
      except ImportError:
        logging.warning("tensorboardX not installed: metrics go to metrics.jsonl only")
        self.tb = None

  def write(self, step: int, metrics: dict[str, float]):
    if not self.active:
      return
    self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self.jsonl.flush()
    for k, v in metrics.items():
      if self.tb and isinstance(v, (int, float)):
        self.tb.add_scalar(k, v, step)

  def close(self):
    if self.active:
      self.jsonl.close()
      if self.tb:
        self.tb.close()



class Console:
  """What a person running train.py sees on stderr (process 0 only; every message also goes to the
  log): where the outputs go, where training starts, progress, how it ended.

  Progress is a tqdm bar (loss per batch type and s/step as its postfix, tqdm's own ETA) on a
  terminal, and one line per log step elsewhere (a pipe, a log collector, a notebook cell), where
  a bar's carriage returns would pile up.
  """

  def __init__(self, active: bool):
    self.active, self.bar, self.warm = active, None, False

  def say(self, msg: str) -> None:
    logging.info("%s", msg)
    if not self.active:
      return
    if self.bar is not None:
      self.bar.write(msg, file=sys.stderr)
    else:
      print(msg, file=sys.stderr, flush=True)

  def start(self, step: int, total: int) -> None:
    if self.active and sys.stderr.isatty():
      import tqdm
      self.bar = tqdm.tqdm(total=total, initial=step, desc="train", unit="step",
                           file=sys.stderr, dynamic_ncols=True)

  def advance(self) -> None:
    if self.bar is not None:
      self.bar.update(1)

  def progress(self, step: int, total: int, losses_by_type: dict[str, float],
               step_seconds: float) -> None:
    text = ("loss " + " ".join(f"{bt} {v:.3f}" for bt, v in sorted(losses_by_type.items()))
            + f" | {step_seconds:.2f} s/step")
    # The first window after a (re)start holds the step's compilation: its s/step would promise
    # a far later end than the steady one.
    warming, self.warm = not self.warm, True
    if self.bar is not None:
      self.bar.set_postfix_str(text, refresh=False)
    elif self.active:
      eta = ("after warm-up" if warming else
             time.strftime("%H:%M:%S", time.gmtime(max(total - step, 0) * step_seconds)))
      print(f"step {step}/{total} | {text} | ETA {eta}", file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None





class Interrupted(Exception):
  """Raised inside `StopRequests.interruptible()` when a stop is requested there."""


class StopRequests:
  """SIGTERM (preemption) and a first Ctrl-C request a stop: the train loop saves and exits. A
  second Ctrl-C aborts at once.

  Inputs: none. Use as a context manager around the train loop (handlers are only installed
  from the main thread, signal's rule); read `signal` (the name of the signal, or None). Inside
  `with stops.interruptible():` (an evaluation, which may run for longer than a preemption's
  grace period and changes no state) a request also raises `Interrupted` at once.
  """

  def __init__(self):
    self.signal, self._interruptible = None, False

  def _on_signal(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.signal:
      raise KeyboardInterrupt
    self.signal = signal.Signals(signum).name
    if self._interruptible:
      self._interruptible = False
      raise Interrupted(self.signal)

  def __enter__(self) -> "StopRequests":
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._on_signal)
                        for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def __exit__(self, *exc) -> None:
    for s, h in self._previous.items():
      signal.signal(s, h)

  @contextlib.contextmanager
  def interruptible(self):
    """Code whose work may be abandoned when a stop is requested (raises `Interrupted`)."""
    if self.signal:
      raise Interrupted(self.signal)
    self._interruptible = True
    try:
      yield
    finally:
      self._interruptible = False


# ------------------------------------------------------------------------------------------------
# One trainer per workdir.
# ------------------------------------------------------------------------------------------------

class LeaseHeldError(WorkdirError):
  """Another trainer holds the workdir's lease, and its heartbeat is fresh."""


class LeaseLostError(WorkdirError):
  """This trainer's lease was taken over (its heartbeat had stopped, e.g. the process was
  suspended): it must not write the workdir again."""


def _create_exclusive(path: epath.Path, text: str) -> bool:
  """Writes `path` only if it does not exist (atomically); False if it does.

  Local disks: O_CREAT | O_EXCL. gs://: a write with if_generation_match=0 (google-cloud-storage,
  where installed). Elsewhere there is no atomic create: check, write and read back, which only
  narrows the race, with a warning.
  """
  if "://" not in str(path):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True
  if str(path).startswith("gs://"):
    try:
      from google.cloud import storage  # pylint: disable=g-import-not-at-top
      from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    except ImportError:
      storage = None
    if storage is not None:
      bucket, _, name = str(path)[len("gs://"):].partition("/")
      try:
        storage.Client().bucket(bucket).blob(name).upload_from_string(text, if_generation_match=0)
      except exceptions.PreconditionFailed:
        return False
      return True
  logging.warning("%s: no atomic create-if-absent on this file system (pip install "
                  "google-cloud-storage for gs://); two trainers started at the same moment may "
                  "both take the lease", path)
  if path.exists():
    return False
  path.write_text(text)
  return json.loads(path.read_text()).get("token") == json.loads(text)["token"]


class Lease:
  """One trainer per workdir: `<workdir>/lease.json` names the holder (host, pid, start time) and
  carries a heartbeat that a background thread renews.

  Inputs: the workdir; heartbeat_seconds (how often it is renewed); stale_after (heartbeats
  missed before another trainer may take the lease over). Use as a context manager around
  everything a trainer writes (process 0 of a run; the evaluator never takes it):
    with run_dir.Lease(path) as lease:  # LeaseHeldError naming the holder, if another trainer
      ...                               # holds a fresh lease
      lease.check()                     # before each write: LeaseLostError once taken over
  A lease whose holder is gone (same host, pid no longer running) or whose heartbeat is older
  than stale_after * heartbeat_seconds is taken over, and `took_over` says whose it was. Related:
  `check_workdir`.
  """

  def __init__(self, workdir: str | os.PathLike, *, heartbeat_seconds: float = 30.0,
               stale_after: int = 4):
    self.path = epath.Path(workdir) / LEASE
    self.heartbeat_seconds, self.stale_after = float(heartbeat_seconds), int(stale_after)
    self.token = uuid.uuid4().hex
    self.took_over = None  # the holder whose stale lease this one replaced
    self._lost = threading.Event()
    self._stop = threading.Event()
    self._thread = None
    self._record = {"host": socket.gethostname(), "pid": os.getpid(),
                    "started": datetime.datetime.now().isoformat(timespec="seconds"),
                    "token": self.token}

  def _text(self) -> str:
    return json.dumps({**self._record, "heartbeat": time.time()})

  def _holder(self) -> dict | None:
    """The lease file's record; None once it is gone. A torn record counts as a heartbeat at
    the file's modification time."""
    try:
      text = self.path.read_text()
    except FileNotFoundError:
      return None
    try:
      return json.loads(text)
    except ValueError:
      return {"host": "?", "pid": -1, "started": "?", "token": None,
              "heartbeat": self.path.stat().mtime}

  def stale(self, holder: dict) -> str | None:
    """Why `holder`'s lease may be taken over, or None while it is live."""
    age = time.time() - float(holder.get("heartbeat", 0))
    if holder.get("host") == socket.gethostname() and not hardware.process_alive(int(holder.get("pid", -1))):
      return f"its process {holder.get('pid')} is no longer running"
    if age > self.stale_after * self.heartbeat_seconds:
      return f"no heartbeat for {age:.0f} s"
    return None

  def describe(self, holder: dict) -> str:
    age = time.time() - float(holder.get("heartbeat", 0))
    return (f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')},"
            f" last heartbeat {age:.0f} s ago")

  def acquire(self) -> "Lease":
    for _ in range(3):
      if _create_exclusive(self.path, self._text()):
        self._start_heartbeat()
        return self
      holder = self._holder()
      if holder is None:
        continue  # released in between: try again
      why = self.stale(holder)
      if why is None:
        raise LeaseHeldError(
            f"{self.path.parent} is in use by another trainer ({self.describe(holder)}; "
            f"{self.path}). Wait for it to finish, stop it, or use another --workdir; a lease "
            f"without a heartbeat for {self.stale_after * self.heartbeat_seconds:.0f} s is "
            "taken over")
      # Move the stale lease aside under a name of our own: of two trainers taking it over at
      # once, only one rename succeeds.
      aside = self.path.parent / f"{LEASE}.stale-{self.token}"
      try:
        self.path.rename(aside)
      except FileNotFoundError:
        continue
      aside.unlink()
      self.took_over = f"{self.describe(holder)}: {why}"
    raise LeaseHeldError(f"{self.path}: could not take the lease (other trainers are starting "
                         "here at the same moment); use another --workdir")

  def _start_heartbeat(self) -> None:
    def beat():
      while not self._stop.wait(self.heartbeat_seconds):
        holder = self._holder()
        if holder is None or holder.get("token") != self.token:
          self._lost.set()
          logging.error("%s: this trainer's lease was taken over (%s)", self.path,
                        "removed" if holder is None else self.describe(holder))
          return
        tmp = self.path.parent / f"{LEASE}.tmp-{self.token}"
        try:
          tmp.write_text(self._text())
          tmp.replace(self.path)
        except OSError as e:  # a full disk must not kill the trainer: its lease just ages
          logging.warning("%s: heartbeat not written: %s", self.path, e)
    self._thread = threading.Thread(target=beat, name="hybrid_ir-lease", daemon=True)
    self._thread.start()

  def check(self) -> None:
    """Raises LeaseLostError once another trainer has taken this lease over."""
    if self._lost.is_set():
      holder = self._holder()
      raise LeaseLostError(
          f"{self.path.parent}: another trainer took this workdir over "
          f"({self.describe(holder) if holder else 'the lease was removed'}) while this one "
          "was not renewing its lease (suspended?); stopping without writing anything more")

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
      holder = self._holder()
      if holder is not None and holder.get("token") == self.token:
        self.path.unlink()

  def __enter__(self) -> "Lease":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
