"""Every command the docs show works as written, and the docs point only at what exists.

Commands come from every markdown file (fenced blocks, inline `code`), the notebook's markdown,
the docstrings of configs/ and hybrid_ir/, and launch/*.sh --help. `python -m hybrid_ir.<module>`:
one subprocess per module runs its real `__main__`, `absl.app.run` replaced by a loop over its
commands: its parser takes the flags, `--config path[:arg]` loads, each `--config.x.y=v` is a key;
`main` runs up to its heavy step (train: pre-model checks, optimizer, batch schedule; eval, search,
export, mine: up to `models.load_encoder`; experiments: every run config; report: CLI, `find_results`).
`launch/*.sh`: a `--dry-run` with a fake gcloud, each command of its plan checked as above.
Placeholders come from the tables below; anything else that looks like one, or a path not in the
repository, fails; other shell lines are in OTHER_COMMANDS, inline fragments in FRAGMENTS or
NOT_CHECKED. Markdown links, anchors and paths exist; no file outside the repository is named.
"""
from __future__ import annotations

import ast
import collections
import contextlib
import dataclasses
import functools
import importlib.util
import io
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import traceback

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = "colab/demo.ipynb"
LAUNCH_SCRIPTS = tuple(sorted(p.name for p in (REPO / "launch").glob("*.sh")
                              if p.name != "common.sh"))
LAUNCH_DEFAULT_CONFIG = "configs/paper/xlmr_hybrid.py"  # CONFIG's default in launch/common.sh


@functools.cache
def markdown_files() -> tuple[str, ...]:
  """Every *.md of the repository (not hidden folders, workdirs or build outputs)."""
  out = []
  for root, dirs, files in os.walk(REPO):
    dirs[:] = [d for d in dirs if not d.startswith((".", "__")) and d not in ("workdirs", "build")
               and not d.endswith(".egg-info")]
    out += [str(pathlib.Path(root, f).relative_to(REPO)) for f in files if f.endswith(".md")]
  return tuple(sorted(out))


def docstring_files() -> list[str]:
  globs = ("configs/*.py", "configs/*/*.py", "hybrid_ir/*.py")
  return sorted(str(p.relative_to(REPO)) for g in globs for p in REPO.glob(g))


# --- The tables: placeholders, other commands, fragments, known failures.

# Whole arguments (or --flag=VALUE values) that stand for something; {tmp} is a fresh folder.
PLACEHOLDERS = {
    "W": "{tmp}/W",                                 # a workdir
    "WORKDIR": "{tmp}/WORKDIR",                     # a workdir (report before-after, colab)
    "OUT": "{tmp}/OUT",                             # export's output folder
    "<dir>": "{tmp}/dir",                           # train.py's synopsis: the workdir
    "<workdirs>/<run>": "{tmp}/workdirs/run",       # experiments.py: a run's workdir
    "N": "1",                                       # --step N, --workers N
    "BEFORE.json": "{tmp}/BEFORE.json",             # report compare: two runs' JSONs
    "AFTER.json": "{tmp}/AFTER.json",
    "BEFORE_DIR": "results/before_identity_fix/use_m3/strategies",  # report versus: two folders
    "AFTER_DIR": "results/use_m3/strategies",
    "DIR": "results/use_m3",                        # report --results DIR: the committed results
    "<results>": "results/use_m3",
    "<experiment>": "strategies",                   # report/experiments: an experiment's name
    "<name>": "strategies",
    "CONFIG": "configs/demo.py",                    # colab, launch/eval.sh: any config file
    # own_data.py's later commands elide the arg its first one gives; one run of an experiment.
    "configs/own_data.py:jsonl=...":
        "configs/own_data.py:jsonl=my/en.jsonl+my/de.jsonl+my/es.jsonl",
    "configs/experiments/base.py:<arg>":
        "configs/experiments/base.py:train=xquad-r,mono=0.5,cross=0.5",
    "corpus.jsonl": "{tmp}/corpus.jsonl",           # search's inputs (written with one record)
    "queries.tsv": "{tmp}/queries.tsv",
    "qrels.txt": "{tmp}/qrels.txt",
}
# Placeholder paths by prefix (outputs, or your own files): under {tmp} instead.
PATH_PLACEHOLDERS = {
    "workdirs/": "{tmp}/workdirs/",
    "exported/": "{tmp}/exported/",
    "runs/": "{tmp}/runs/",
    "my/": "{tmp}/my/",
}
# Synopsis text replaced before the [optional] / {a,b} expansion.
RAW_PLACEHOLDERS = {
    "<file>[:arg]": "configs/demo.py",   # train.py's synopsis: any config file
    "[flags]": "",                       # experiments.py's synopsis: no flags is a valid case
    "[ARGS]": "",                        # launch/*.sh --help: the pass-through arguments
}
# `...` elides arguments: these are filled in when a module requires them and they are missing.
ELIDED = {
    "hybrid_ir.train": {"workdir": "{tmp}/elided"},
    "hybrid_ir.eval": {"workdir": "{tmp}/elided"},
    "hybrid_ir.export": {"workdir": "{tmp}/elided", "out": "{tmp}/elided_out"},
}
# Launch commands whose docs elide the parameters (`launch/run_all.sh --config=... ...`) get
# these; every other launch command runs with only what its document sets (`export ...`).
LAUNCH_ELIDED_ENV = {"PROJECT_ID": "dummy-project", "ZONE": "us-central2-b",
                     "TPU_NAME": "dummy-tpu", "WORKDIR": "gs://dummy-bucket/runs/docs"}
# Flags whose value is a path (checked: in the repository, gs://, or a placeholder).
PATH_FLAGS = {"workdir", "out", "corpus", "queries", "qrels", "cache_dir", "results", "workdirs",
              "base_config", "data"}
BOOL_FLAGS = {"once", "pretrained", "overwrite", "dry-run", "detach", "keep", "help", "helpfull",
              "helpshort"}

# Lines of shell code blocks that are not hybrid_ir or launch commands: prefix -> why unchecked.
OTHER_COMMANDS = {
    "make ": "Makefile targets: `make test` is CI itself, and it runs `make demo`'s commands "
             "(checked here from the README) in miniature",
    "PYTHONPATH=. python benchmarks/": "a benchmark (make bench), minutes of runtime",
    "PEAK_GFLOPS=": "benchmarks/accelerator.sh, for an accelerator; tests/test_bench_train.py "
                    "runs it in miniature",
    "python -c ": "plain Python on an exported model; tests/test_own_data.py runs the walk-through",
    "gcloud ": "Google Cloud CLI set-up, nothing of this project",
    "tmux ": "a terminal multiplexer, nothing of this project",
}
# Inline `--config.*` fragments, in whichever file: fragment -> the full command it belongs to
# (checked like any other), or NOT_CHECKED with the reason.
FRAGMENTS = {
    "--config.input.store_dir=gs://MY-BUCKET/hybrid_ir/stores":
        "python -m hybrid_ir.train --config configs/paper/xlmr_hybrid.py --workdir "
        "gs://MY-BUCKET/runs --config.input.store_dir=gs://MY-BUCKET/hybrid_ir/stores",
    "--accelerator-type=v4-32 -- --config.input.batch_size=128":
        "launch/run_all.sh --accelerator-type=v4-32 --data=gs://MY-BUCKET/hybrid_ir/data "
        "--config=configs/paper/xlmr_hybrid.py -- --config.input.batch_size=128",
    "--config.loss.variant=paper":
        "python -m hybrid_ir.train --config configs/paper/xlmr_hybrid.py --workdir W "
        "--config.loss.variant=paper",
    "--config.optimizer.embedding_update=lazy":
        "python -m hybrid_ir.train --config configs/demo.py --workdir W "
        "--config.optimizer.embedding_update=lazy",
    "--config.input.packing=True":
        "python -m hybrid_ir.train --config configs/paper/xlmr_hybrid.py --workdir W "
        "--config.input.packing=True",
    "--config.loss.temperature_lr=1e-2":
        "python -m hybrid_ir.train --config configs/demo.py --workdir W "
        "--config.loss.learn_temperature=true --config.loss.temperature_lr=1e-2",
}
NOT_CHECKED = {
    "--config.optimizer.embedding_update=lazy|frozen":
        "two values of the key above (checked as a fragment)",
    "--config.a.b=v": "the override syntax, with no real key",
    "--config.<key>": "the override syntax, with no real key",
}

# --- Extraction.

PY_CMD = r"(?:\.venv/bin/)?python3? -m hybrid_ir\.[\w.]+"
LAUNCH_CMD = r"launch/[\w-]+\.sh"
COMMAND_LINE = re.compile(rf"^\s*(?:\$\s+)?(?P<cmd>(?:{PY_CMD}|{LAUNCH_CMD})(?:\s.*)?)$")
INLINE_COMMAND = re.compile(rf"^(?:{PY_CMD}|{LAUNCH_CMD})(?:\s|$)")
ANY_COMMAND = re.compile(rf"{PY_CMD}|(?:^|\s){LAUNCH_CMD}")
FENCE = re.compile(r"^\s*```\s*(\S*)\s*$")
ASSIGN = re.compile(r"^[A-Za-z_]\w*=")
SHELL_LANGS = {"bash", "sh", "shell", "console"}
PATH_SUFFIX = r"\.(json|jsonl|tsv|txt|py|trec|gz)$"  # a positional argument with these is a path
SHELL_OPS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>&1", "2>", "1>"}


@dataclasses.dataclass(frozen=True)
class Doc:
  """A command (or line, or fragment) as the docs give it."""
  file: str
  line: str           # "272", or "cell14:5" in the notebook
  text: str           # continuations joined
  env: tuple = ()     # shell variables the document set before it
  inline: bool = False

  @property
  def origin(self) -> str:
    return f"{self.file}:{self.line}"


@dataclasses.dataclass
class Extracted:
  commands: list = dataclasses.field(default_factory=list)
  fragments: list = dataclasses.field(default_factory=list)
  unknown: list = dataclasses.field(default_factory=list)   # Docs nobody classified


def _join_continuations(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
  """[(line id, text)] -> logical lines: a trailing backslash joins the next line."""
  out, i = [], 0
  while i < len(lines):
    lid, text = lines[i]
    while text.rstrip().endswith("\\") and i + 1 < len(lines):
      i += 1
      text = text.rstrip()[:-1] + " " + lines[i][1].strip()
    out.append((lid, text))
    i += 1
  return out


def _update_env(words: list[str], env: dict) -> bool:
  """VAR=... or export VAR=... lines: sets env, True. Anything else: False."""
  assigns = words[1:] if words[:1] == ["export"] else words
  if not assigns or not all(ASSIGN.match(w) for w in assigns):
    return False
  for w in assigns:
    k, _, v = w.partition("=")
    env[k] = v
  return True


def _inline_spans(file: str, prose: list[tuple[str, str]], out: Extracted) -> None:
  """`code` spans of prose lines (they may wrap): commands and --config fragments."""
  text = "\n".join(t for _, t in prose)
  for m in re.finditer(r"`([^`]+)`", text):
    span = " ".join(m.group(1).split())
    lid = prose[text.count("\n", 0, m.start())][0]
    if INLINE_COMMAND.match(span):
      out.commands.append(Doc(file, lid, span, inline=True))
    elif "--config." in span:
      out.fragments.append(Doc(file, lid, span, inline=True))
    elif ANY_COMMAND.search(span):
      out.unknown.append(Doc(file, lid, span, inline=True))


def scan_markdown(file: str, text: str, out: Extracted, line_prefix: str = "",
                  env: dict | None = None) -> None:
  env = {} if env is None else env
  lines = text.split("\n")
  prose, block, lang, in_fence = [], [], "", False

  def flush_block():
    for lid, logical in _join_continuations(block):
      stripped = logical.strip()
      if not stripped or stripped.startswith("#"):
        continue
      m = COMMAND_LINE.match(logical)
      if m:
        out.commands.append(Doc(file, lid, m["cmd"].strip(), tuple(env.items())))
        continue
      if lang in SHELL_LANGS:
        try:
          words = shlex.split(stripped, comments=True)
        except ValueError:
          words = []
        if _update_env(words, env):
          continue
        if any(stripped.startswith(p) for p in OTHER_COMMANDS):  # not checked, for its reason
          continue
        out.unknown.append(Doc(file, lid, stripped))
      elif ANY_COMMAND.search(logical):  # a command that does not start its line
        out.unknown.append(Doc(file, lid, stripped))

  for i, line in enumerate(lines, 1):
    lid = f"{line_prefix}{i}"
    m = FENCE.match(line)
    if m:
      if in_fence:
        flush_block()
        block = []
      in_fence, lang = not in_fence, m.group(1).lower()
      continue
    (block if in_fence else prose).append((lid, line))
  _inline_spans(file, prose, out)


def scan_docstring(file: str, out: Extracted) -> None:
  source = (REPO / file).read_text()
  body = ast.parse(source).body
  if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
          and isinstance(body[0].value.value, str)):
    return
  node = body[0]
  lines = [(str(n), line) for n, line in
           enumerate(source.split("\n")[node.lineno - 1:node.end_lineno], node.lineno)]
  lines[0] = (lines[0][0], re.sub(r'^\s*[rRuU]?("""|\'\'\')', "", lines[0][1]))
  lines[-1] = (lines[-1][0], re.sub(r'("""|\'\'\')\s*$', "", lines[-1][1]))
  prose = []
  for lid, logical in _join_continuations(lines):
    m = COMMAND_LINE.match(logical)
    if m:
      out.commands.append(Doc(file, lid, m["cmd"].strip()))
    else:
      prose.append((lid, logical))
  _inline_spans(file, prose, out)


def _clean_env(tmp: pathlib.Path | None = None) -> dict:
  """The environment of a launch script: none of the user's parameters leak in."""
  params = ("PROJECT_ID", "ZONE", "TPU_NAME", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "PROVISION",
            "WORKDIR", "CONFIG", "PYTHON_VERSION", "GIT_URL", "GIT_REF", "DATA_URL", "WORKER",
            "GCLOUD", "POLL_SECONDS", "WAIT_TIMEOUT", "PYTHON")
  env = {k: v for k, v in os.environ.items() if k not in params}
  if tmp is not None:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "gcloud"  # a dry run must not call gcloud; if it did, this fails loudly
    fake.write_text("#!/bin/sh\necho 'fake gcloud called during a dry run' >&2\nexit 97\n")
    fake.chmod(0o755)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", TMPDIR=str(tmp))
  return env


@functools.cache
def launch_help() -> dict[str, subprocess.CompletedProcess]:
  return {s: subprocess.run(["bash", f"launch/{s}", "--help"], cwd=REPO, env=_clean_env(),
                            capture_output=True, text=True, timeout=60)
          for s in LAUNCH_SCRIPTS}


def scan_launch_help(script: str, out: Extracted) -> None:
  file = f"launch/{script}--help"
  text = launch_help()[script].stdout
  lines = [(str(i), t) for i, t in enumerate(text.split("\n"), 1)]
  for lid, logical in _join_continuations(lines):
    m = COMMAND_LINE.match(logical)
    if m:
      out.commands.append(Doc(file, lid, m["cmd"].strip()))
      continue
    for q in re.finditer(rf"'({PY_CMD}[^']*)'", logical):
      out.commands.append(Doc(file, lid, " ".join(q.group(1).split()), inline=True))
    for f in re.finditer(r"--config\.[\w.]+=\S+", logical):
      # Pass-through arguments: for the script's binary with its default config.
      module = "hybrid_ir.eval" if script == "eval.sh" else "hybrid_ir.train"
      out.commands.append(Doc(file, lid, f"python -m {module} --config {LAUNCH_DEFAULT_CONFIG} "
                              f"--workdir gs://dummy-bucket/run {f.group(0)}", inline=True))


@functools.cache
def extract() -> Extracted:
  out = Extracted()
  for file in markdown_files():
    scan_markdown(file, (REPO / file).read_text(), out)
  notebook = json.loads((REPO / NOTEBOOK).read_text())
  for i, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] == "markdown":
      scan_markdown(NOTEBOOK, "".join(cell["source"]), out, line_prefix=f"cell{i}:")
  for file in docstring_files():
    scan_docstring(file, out)
  for script in LAUNCH_SCRIPTS:
    scan_launch_help(script, out)
  # Fragments become the full commands they belong to (with the document's variables there).
  for frag in out.fragments:
    if frag.text in FRAGMENTS:
      env = next((c.env for c in reversed(out.commands) if c.file == frag.file and c.env), ())
      out.commands.append(Doc(frag.file, frag.line, FRAGMENTS[frag.text], env, inline=True))
  return out


# --- From a command as written to the argv that is checked.

class DocError(Exception):
  """A command that cannot be checked as written (unknown placeholder, variable, path...)."""


def expand(text: str) -> list[str]:
  """[optional] / [a | b] -> none and each; {a,b} -> each."""
  m = re.search(r"\[([^\[\]]*)\]|\{([^{}]*)\}", text)
  if not m:
    return [text]
  if m.group(1) is not None:
    alternatives = [""] + [a.strip() for a in m.group(1).split("|")]
  else:
    alternatives = [a.strip() for a in m.group(2).split(",")]
  out = []
  for a in alternatives:
    for v in expand(text[:m.start()] + a + text[m.end():]):
      if v not in out:
        out.append(v)
  return out


def substitute_env(text: str, env: dict) -> str:
  def var(m):
    name = m.group(1) or m.group(2)
    if name not in env:
      raise DocError(f"${name} is not set by the document before this command")
    value = env[name]
    if not re.fullmatch(r"[\w@%+=:,./-]*", value):
      raise DocError(f"${name}={value!r}: a value a shell would split or re-quote")
    return value
  return re.sub(r"\$\{(\w+)\}|\$(\w+)", var, text)


def variants(doc: Doc) -> list[str]:
  """The command's concrete forms (synopsis expanded), still with their placeholders."""
  text = doc.text
  for raw, repl in RAW_PLACEHOLDERS.items():
    text = text.replace(raw, repl)
  return [" ".join(v.split()) for v in expand(text)]


def words_of(variant: str, env: dict) -> list[str]:
  try:
    return shlex.split(substitute_env(variant, env), comments=True)
  except ValueError as e:
    raise DocError(f"not valid shell: {e}") from e


def check_no_placeholder(value: str) -> None:
  if (re.search(r"<[^>]*>", value) or "..." in value or "…" in value or "$" in value
      or re.fullmatch(r"[A-Z][A-Z0-9_]*", value)):
    raise DocError(f"{value!r} looks like a placeholder, but is in none of PLACEHOLDERS, "
                   "PATH_PLACEHOLDERS, RAW_PLACEHOLDERS: add it there with what it stands for")


def resolve_path(value: str, tmp: pathlib.Path) -> str:
  for prefix, repl in PATH_PLACEHOLDERS.items():
    if value.startswith(prefix) or value == prefix.rstrip("/"):
      return repl.format(tmp=tmp) + value[len(prefix):]
  if value.startswith("gs://"):
    return value  # remote: a parse check never reads or writes it
  check_no_placeholder(value)
  # DIR/RUN: a run on all its seeds (RUN.json, RUN-seed<k>.json), as report compare takes it.
  if (REPO / value).exists() or (REPO / f"{value}.json").is_file():
    return value
  raise DocError(f"path {value!r} is not in the repository, not gs://, and not a placeholder "
                 "(PLACEHOLDERS / PATH_PLACEHOLDERS)")


def resolve_config(spec: str, tmp: pathlib.Path) -> str:
  path, sep, arg = spec.partition(":")
  if not (REPO / path).is_file():
    raise DocError(f"--config {spec!r}: no config file {path} in the repository")
  items = []
  for item in filter(None, arg.split(",")):
    key, eq, value = item.partition("=")
    parts = [resolve_path(p, tmp) if "/" in p else p for p in value.split("+")]
    for p in parts:
      check_no_placeholder(p)
    check_no_placeholder(key)
    items.append(key + eq + "+".join(parts))
  return path + sep + ",".join(items)


def resolve_value(flag: str | None, value: str, tmp: pathlib.Path) -> str:
  if value in PLACEHOLDERS:
    value = PLACEHOLDERS[value].format(tmp=tmp)
    if value.startswith(str(tmp)):
      return value
  if flag == "config":
    return resolve_config(value, tmp)
  if flag in PATH_FLAGS or (flag is None and ("/" in value or re.search(PATH_SUFFIX, value))):
    return resolve_path(value, tmp)
  check_no_placeholder(value)
  return value


def resolve_args(args: list[str], tmp: pathlib.Path) -> list[str]:
  """Placeholders -> tmp paths and values; raises DocError on anything unknown."""
  out, pending = [], None
  for a in args:
    if pending is not None:
      out.append(resolve_value(pending, a, tmp))
      pending = None
    elif a == "--":
      out.append(a)
    elif a.startswith("-"):
      name, eq, value = a.lstrip("-").partition("=")
      if eq:
        out.append(a[:len(a) - len(value)] + resolve_value(name, value, tmp))
      else:
        check_no_placeholder(name)
        out.append(a)
        if name not in BOOL_FLAGS and not name.startswith("no"):
          pending = name
    else:
      out.append(resolve_value(None, a, tmp))
  return out


def python_argv(words: list[str], tmp: pathlib.Path) -> tuple[str, list[str]]:
  """(module, argv with placeholders resolved) of `python -m hybrid_ir.X ...` words."""
  if len(words) < 3 or words[1] != "-m" or not re.fullmatch(r"(\.venv/bin/)?python3?", words[0]):
    raise DocError(f"not a `python -m` command: {words}")
  module, args = words[2], words[3:]
  elided = "..." in args
  args = [a for a in args if a != "..."]
  # A flag followed by another flag (or nothing) takes no value: --once, --pretrained ...
  argv = resolve_args(args, tmp)
  if elided:
    given = {a.lstrip("-").split("=")[0] for a in argv if a.startswith("--")}
    for flag, value in ELIDED.get(module, {}).items():
      if flag not in given:
        argv += [f"--{flag}", value.format(tmp=tmp)]
  return module, argv


def write_search_inputs(argv: list[str], tmp: pathlib.Path) -> None:
  """search reads its inputs before it loads a model: placeholder files get one valid record."""
  records = {"corpus": '{"id": "d1", "text": "Berlin is the capital of Germany."}',
             "queries": '{"id": "q1", "text": "capital of Germany"}', "qrels": "q1 Q0 d1 1"}
  for flag, value in zip(argv, argv[1:]):
    path = pathlib.Path(value)
    if flag.lstrip("-") in records and str(path).startswith(str(tmp)):
      record = records[flag.lstrip("-")]
      if path.suffix == ".tsv":
        record = "\t".join(json.loads(record).values())
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(record + "\n")


def tpu_chips(accelerator_type: str) -> int:
  """Chips of a Cloud TPU accelerator type: v2-v4 and v5p count TensorCores (2 per chip)."""
  gen, _, n = accelerator_type.rpartition("-")
  return int(n) // 2 if gen in ("v2", "v3", "v4", "v5p") else int(n)


def plan_python_commands(stdout: str) -> list[list[str]]:
  """The `python -m hybrid_ir.X ...` words in a dry run's plan (also inside ssh --command=)."""
  found = []
  for line in stdout.splitlines():
    if not line.startswith("+ "):
      continue
    words = shlex.split(line[2:])
    for ws in [words] + [shlex.split(w.split("=", 1)[1]) for w in words
                         if w.startswith("--command=")]:
      for i in range(len(ws) - 2):
        if (re.fullmatch(r"(.*/)?python3?", ws[i]) and ws[i + 1] == "-m"
            and ws[i + 2].startswith("hybrid_ir.")):
          cmd = ["python", "-m"]
          for w in ws[i + 2:]:
            if w in SHELL_OPS:
              break
            cmd.append(w)
          found.append(cmd)
  return found


# --- The checks: one worker subprocess per module, launch dry runs, all in one module fixture.

@dataclasses.dataclass
class Case:
  id: str
  doc: Doc
  variant: str
  kind: str   # 'python' | 'launch' | 'mention'


@functools.cache
def cases() -> tuple[Case, ...]:
  out, seen = [], {}
  for doc in extract().commands:
    vs = variants(doc)
    for k, v in enumerate(vs):
      base = doc.origin + (f"#{k}" if len(vs) > 1 else "")
      n = seen.get(base, 0)
      seen[base] = n + 1
      cid = base + (f"~{n}" if n else "")
      is_launch = re.match(LAUNCH_CMD, v) is not None
      mention = doc.inline and not is_launch and re.fullmatch(PY_CMD, v) is not None
      out.append(Case(cid, doc, v, "launch" if is_launch else "mention" if mention else "python"))
  return tuple(out)


def _worker_results(module: str, commands: list, tmp: pathlib.Path) -> subprocess.Popen:
  spec = tmp / f"{module}.in.json"
  spec.write_text(json.dumps({"module": module, "commands": commands}))
  cluster = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
  env = {k: v for k, v in os.environ.items() if k not in cluster} | {"PYTHONPATH": str(REPO)}
  out = tmp / f"{module}.out.json"
  return subprocess.Popen([sys.executable, __file__, "--worker", str(spec), str(out)], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclasses.dataclass
class Checked:
  python: dict      # case id -> {"ok", "error", "argv", "info"}
  launch: dict      # case id -> {"rc", "stdout", "stderr", "args", "derived": [(cid, module)]}
  help: dict        # module -> CompletedProcess-like dict


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> Checked:
  tmp = tmp_path_factory.mktemp("docs_commands")
  python, launch, per_module = {}, {}, {}

  def add_python(cid, words):
    try:
      module, argv = python_argv(words, tmp)
    except DocError as e:
      python[cid] = {"ok": False, "error": f"{e}", "argv": words}
      return
    if module == "hybrid_ir.search":
      write_search_inputs(argv, tmp)
    python[cid] = {"ok": None, "argv": [module, *argv]}
    per_module.setdefault(module, []).append([cid, [module, *argv]])

  for case in cases():
    env = dict(case.doc.env)
    try:
      words = words_of(case.variant, env)
    except DocError as e:
      (launch if case.kind == "launch" else python)[case.id] = {
          "ok": False, "error": str(e), "rc": None, "argv": [], "args": [], "derived": []}
      continue
    if case.kind == "python":
      add_python(case.id, words)
    elif case.kind == "launch":
      launch[case.id] = res = _dry_run(words, env, tmp)
      for n, cmd in enumerate(plan_python_commands(res.get("stdout", ""))):
        add_python(f"{case.id}->{n}", cmd)
        res["derived"].append(f"{case.id}->{n}")

  procs = {m: _worker_results(m, cmds, tmp) for m, cmds in per_module.items()}
  helps = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for m in binaries()}
  for module, proc in procs.items():
    log, _ = proc.communicate(timeout=300)
    out = tmp / f"{module}.out.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    for cid, _ in per_module[module]:
      python[cid].update(results.get(cid) or {
          "ok": False, "error": f"the {module} worker gave no result (exit {proc.returncode}):\n"
                                f"{log[-3000:]}"})
  help_results = {}
  for m, p in helps.items():
    stdout, stderr = p.communicate(timeout=120)
    help_results[m] = {"rc": p.returncode, "stdout": stdout, "stderr": stderr}
  return Checked(python, launch, help_results)


def _dry_run(words: list[str], env: dict, tmp: pathlib.Path) -> dict:
  script, args = words[0], words[1:]
  res = {"rc": None, "derived": [], "args": args}
  if not (REPO / script).is_file():
    return dict(res, error=f"no script {script}")
  elided = "..." in args
  args = [a for a in args if a != "..."]
  head, tail = (args[:args.index("--")], args[args.index("--"):]) if "--" in args else (args, [])
  try:
    for a in head:
      check_no_placeholder(a.partition("=")[2] if a.startswith("--") else a)
  except DocError as e:
    return dict(res, error=str(e))
  if "--dry-run" not in head:
    head = head + ["--dry-run"]
  run_env = _clean_env(tmp)
  if elided:
    run_env.update(LAUNCH_ELIDED_ENV)
  run_env.update(env)
  p = subprocess.run(["bash", script, *head, *tail], cwd=REPO, env=run_env, capture_output=True,
                     text=True, timeout=60)
  return dict(res, rc=p.returncode, stdout=p.stdout, stderr=p.stderr, args=head + tail)


@functools.cache
def binaries() -> tuple[str, ...]:
  """hybrid_ir modules that are programs (an `if __name__ == "__main__":` block)."""
  return tuple(f"hybrid_ir.{p.stem}" for p in sorted((REPO / "hybrid_ir").glob("*.py"))
               if 'if __name__ == "__main__":' in p.read_text())


# --- Tests.

def pytest_generate_tests(metafunc):
  for kind in ("python", "launch", "mention"):
    if f"{kind}_case" in metafunc.fixturenames:
      metafunc.parametrize(f"{kind}_case",
                           [pytest.param(c, id=c.id) for c in cases() if c.kind == kind])
  if "help_module" in metafunc.fixturenames:
    metafunc.parametrize("help_module", binaries())
  if "script" in metafunc.fixturenames:
    metafunc.parametrize("script", LAUNCH_SCRIPTS)


def _where(case: Case) -> str:
  return f"{case.doc.origin}: `{case.doc.text}`" + (
      f"\n  (variant `{case.variant}`)" if case.variant != case.doc.text else "")


def test_python_command(python_case, checked):
  r = checked.python[python_case.id]
  assert r["ok"], (f"{_where(python_case)}\n  checked as: {shlex.join(r['argv'])}\n"
                   f"  error: {r['error']}")


def test_launch_command(launch_case, checked):
  r = checked.launch[launch_case.id]
  where = _where(launch_case)
  assert not r.get("error"), f"{where}\n  error: {r['error']}"
  assert r["rc"] == 0, (f"{where}\n  ran: {shlex.join(r['args'])}\n  exit {r['rc']}\n"
                        f"{r['stderr'][-2000:]}")
  plan = [line for line in r["stdout"].splitlines() if line.startswith("+ ")]
  assert plan, f"{where}\n  the dry run printed no plan:\n{r['stdout']}"
  if pathlib.Path(launch_case.variant.split()[0]).name in ("run_all.sh", "train.sh", "eval.sh"):
    assert r["derived"], f"{where}\n  no python -m hybrid_ir command found in its plan"
  accelerator = next((m.group(1) for m in re.finditer(r"--accelerator-type=(\S+)", r["stdout"])),
                     None)
  for cid in r["derived"]:
    d = checked.python[cid]
    assert d["ok"], (f"{where}\n  its plan runs: {shlex.join(d['argv'])}\n"
                     f"  which fails: {d['error']}")
    batch = (d.get("info") or {}).get("batch_size")
    if accelerator and batch and d["argv"][0] == "hybrid_ir.train":
      chips = tpu_chips(accelerator)
      assert batch % chips == 0, (f"{where}\n  global batch {batch} does not divide over the "
                                  f"{chips} chips of {accelerator}")


def test_mentioned_module_exists(mention_case):
  module = mention_case.variant.split()[-1]
  assert importlib.util.find_spec(module) is not None, _where(mention_case)
  assert module in binaries(), f"{_where(mention_case)}: {module} is not a program"


def test_module_help(help_module, checked):
  """`python -m hybrid_ir.<module> --help` prints the usage and exits 0."""
  r = checked.help[help_module]
  assert "--" in r["stdout"] and "Traceback" not in r["stderr"], r["stderr"][-2000:]
  assert r["rc"] == 0, f"python -m {help_module} --help exits {r['rc']}"


def test_launch_help(script):
  r = launch_help()[script]
  assert r.returncode == 0 and r.stdout.startswith(f"Usage: launch/{script}"), r.stderr
  assert "--dry-run" in r.stdout


def test_every_shell_line_is_classified():
  """Shell lines that are neither commands checked here nor in OTHER_COMMANDS, and inline
  `--config` fragments in neither FRAGMENTS nor NOT_CHECKED: classify them. Entries of FRAGMENTS
  and NOT_CHECKED that no document shows any more: remove them."""
  ex = extract()
  bad = [f"{d.origin}: {d.text}" for d in ex.unknown]
  bad += [f"{d.origin}: fragment `{d.text}`" for d in ex.fragments
          if d.text not in FRAGMENTS and d.text not in NOT_CHECKED]
  shown = {d.text for d in ex.fragments}
  bad += [f"stale: {k}" for k in (*FRAGMENTS, *NOT_CHECKED) if k not in shown]
  assert not bad, "\n".join(bad)


def test_extraction_finds_the_commands():
  """Guards the extractor: in every markdown file, each shell line that starts a command (a plain
  count, independent of the extractor) is a command checked here; the other sources have
  commands; every binary is documented."""
  by_file = collections.Counter(d.file for d in extract().commands if not d.inline)
  starts = re.compile(rf"^\s*(?:\$\s+)?(?:{PY_CMD}|{LAUNCH_CMD})(?:\s|$)")
  for file in markdown_files():
    lines = [l for block in re.findall(r"^```[^\n]*\n(.*?)^```", (REPO / file).read_text(),
                                       flags=re.S | re.M) for l in block.split("\n")]
    assert by_file.get(file, 0) == sum(bool(starts.match(l)) for l in lines), file
  for file, at_least in {"README.md": 10, "launch/README.md": 8, "results/README.md": 40,
                         NOTEBOOK: 2, "hybrid_ir/eval.py": 3, "configs/own_data.py": 4,
                         "launch/run_all.sh--help": 1}.items():
    assert by_file.get(file, 0) >= at_least, (file, by_file.get(file, 0))
  documented = {w for c in cases() if c.kind != "launch" for w in c.variant.split()[2:3]}
  assert set(binaries()) <= documented, set(binaries()) - documented
  assert len([c for c in cases() if c.kind == "launch"]) >= 10


def _prose(file: str) -> str:
  """A markdown file without its fenced blocks."""
  return re.sub(r"^\s*```.*?^\s*```", "", (REPO / file).read_text(), flags=re.S | re.M)


@functools.cache
def _anchors(file: str) -> frozenset:
  """GitHub's ids of a markdown file's headings: lower case, punctuation dropped, '-' for ' '."""
  return frozenset(re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                   for h in re.findall(r"^#+\s+(.*)$", _prose(file), flags=re.M))


def test_links_and_paths_exist():
  """Every relative markdown link (and #anchor) and every repository path in `code` exists."""
  bad = []
  for file in markdown_files():
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(file)):
      path, _, anchor = target.partition("#")
      dest = os.path.relpath((REPO / file).parent / path, REPO) if path else file
      if not re.match(r"[a-z]+:", path) and not (
          (REPO / dest).exists() and (not anchor or not dest.endswith(".md")
                                      or anchor in _anchors(dest))):
        bad.append(f"{file}: link {target}")
    for path in re.findall(r"`((?:benchmarks|colab|configs|docs|hybrid_ir|launch|results|tests)"
                           r"/[\w./-]*)`", _prose(file)):
      if not ((REPO / path).exists() or (REPO / f"{path}.json").is_file()):
        bad.append(f"{file}: no {path}")
  assert not bad, "\n".join(bad)


def test_no_reference_outside_the_repository():
  """The design and the paper's facts are told in the repository's own docs, not pointed to."""
  bad = [f"{file}:{n}: {line.strip()}" for file in markdown_files()
         for n, line in enumerate((REPO / file).read_text().split("\n"), 1)
         if re.search(r"\b(?:DESIGN|PAPER)\.md\b", line)]
  assert not bad, "\n".join(bad)


def _tables(text: str) -> list[list[list[str]]]:
  """The markdown tables of a text: rows of stripped cells, the |---| rows left out."""
  return [[[c.strip() for c in row.strip("|").split("|")] for row in table.split("\n")
           if not re.fullmatch(r"[|\-\s:]*", row)]
          for table in re.findall(r"(?:^\|.*(?:\n|$))+", text, flags=re.M)]


def test_demo_table_is_the_saved_run():
  """The README's demo table is what `make demo` prints, to every digit: the demo trains
  experiment 1's hybrid run (the same config but for checkpointing), and `report before-after`
  prints `report.compare_files(pretrained, newest step)`, here of that run's saved results."""
  from hybrid_ir import config_flags
  from hybrid_ir import report
  runs = REPO / "results/use_m3/strategies"
  saved = json.loads((runs / "xquad-r-hybrid.json").read_text())
  demo = config_flags.load_config_file(str(REPO / "configs/demo.py")).to_dict()
  run = config_flags.load_config_file(str(REPO / saved["config"])).to_dict()
  for c in (demo, run):  # when to save changes nothing trained; absent keys mean their defaults
    del c["checkpoint"]
    c["input"].setdefault("packing", False)
    for s in c["input"]["sources"]:
      s.setdefault("num_negatives", 0)
  assert demo == run
  printed = report.compare_files(runs / "xquad-r-pretrained.json", runs / "xquad-r-hybrid.json")
  assert (runs / "demo.md").read_text() == printed + "\n"
  readme = (REPO / "README.md").read_text()
  section = readme[readme.index("## The demo"):readme.index("\n## ", readme.index("## The demo"))]
  assert _tables(section) == _tables(printed), "README.md's demo table is not demo.md's"
  rows = {r[0]: r[1:] for r in _tables((runs / "report.md").read_text())[0]}
  (_, before, after), *_ = _tables(printed)
  assert before[1:] == rows["xquad-r-pretrained"] and after[1:] == rows["xquad-r-hybrid"]


def test_placeholders_and_expansion():
  """The machinery itself: synopsis expansion, variables, placeholders, unknown ones."""
  tmp = pathlib.Path("/tmp/x")
  assert expand("a [--once | --pretrained] {x,y}") == [
      "a  x", "a  y", "a --once x", "a --once y", "a --pretrained x", "a --pretrained y"]
  assert expand("c.py[:mono|:cross]") == ["c.py", "c.py:mono", "c.py:cross"]
  assert words_of('--config "$D" --w=$W # c', {"D": "a:b=c", "W": "w"}) == [
      "--config", "a:b=c", "--w=w"]
  with pytest.raises(DocError, match=r"\$E is not set"):
    words_of("--config $E", {})
  assert python_argv(["python", "-m", "hybrid_ir.train", "--config", "configs/demo.py",
                      "--workdir", "W"], tmp) == (
      "hybrid_ir.train", ["--config", "configs/demo.py", "--workdir", "/tmp/x/W"])
  assert python_argv(["python", "-m", "hybrid_ir.train", "--config",
                      "configs/own_data.py:jsonl=my/a.jsonl+my/b.jsonl", "..."], tmp)[1] == [
      "--config", "configs/own_data.py:jsonl=/tmp/x/my/a.jsonl+/tmp/x/my/b.jsonl",
      "--workdir", "/tmp/x/elided"]
  for unknown in (["--workdir", "SOMEWHERE"], ["--out", "<out>"], ["--corpus", "mine/c.jsonl"],
                  ["--config", "configs/nope.py"], ["--config.input.x=..."]):
    with pytest.raises(DocError):
      python_argv(["python", "-m", "hybrid_ir.train", *unknown], tmp)
  assert tpu_chips("v4-32") == 16 and tpu_chips("v4-8") == 4 and tpu_chips("v5litepod-16") == 16
  assert plan_python_commands(
      "+ gcloud ssh x '--command=cd d && .venv/bin/python -m hybrid_ir.train --config c "
      "--workdir gs://b 2>&1 | tee -a train.log'\n# comment\n+ python3 -m hybrid_ir.eval --once"
  ) == [["python", "-m", "hybrid_ir.train", "--config", "c", "--workdir", "gs://b"],
        ["python", "-m", "hybrid_ir.eval", "--once"]]


# --- The worker: `python tests/integration/test_docs_commands.py --worker IN.json OUT.json`,
# one per module.

def _dummy_sources(sources):
  """SourceSpecs as the sampler would build them, from each source's declared languages."""
  from hybrid_ir import schedule
  return [schedule.SourceSpec(name=c.get("name"), size=1000,
                              lang_sizes=tuple((l, 1000) for l in ls),
                              pairs=tuple((q, p) for q in ls for p in ls))
          for c in sources for ls in [tuple(c.get("langs") or ("en", "de"))]]


def _check_evals(config) -> None:
  for name, ec in (config.get("evals") or {}).items():
    try:
      importlib.import_module(f"hybrid_ir.evaluators.{ec['type']}")
    except ModuleNotFoundError as e:
      raise ValueError(f"config.evals.{name}.type={ec['type']!r}: no such evaluator") from e


def _check_sources(config) -> None:
  from hybrid_ir import data
  if not config.input.get("sources"):
    raise ValueError("config.input.sources is empty")
  for c in config.input.sources:
    data.source_module(c.get("kind"))


def _check_training_config(config) -> dict:
  """What hybrid_ir.train checks before its model loads, plus the optimizer and the schedule."""
  from hybrid_ir import schedule
  # Wherever the library keeps the optimizer (the binary is not the place to look).
  home = next(p.stem for p in sorted((REPO / "hybrid_ir").glob("*.py"))
              if re.search(r"^def make_optimizer\(", p.read_text(), flags=re.M))
  no_negatives = [c.get("name") for c in config.input.sources if not c.get("num_negatives")]
  if config.loss.get("variant") == "paper" and no_negatives:  # train.train's first check
    raise ValueError(f"loss.variant='paper' needs hard negatives; sources {no_negatives} have none")
  importlib.import_module(f"hybrid_ir.{home}").make_optimizer(config)
  _check_sources(config)
  schedule.make_spec(config.input, _dummy_sources(config.input.sources))
  _check_evals(config)
  return {"batch_size": int(config.input.batch_size)}


class _Stop(BaseException):  # not an Exception: no binary's error handling turns it into an exit
  """Raised by the stubbed models.load_encoder: everything before the model load passed."""


def _install_stubs(module: str, g: dict, calls: list) -> None:
  def until_model(fn, after=None):
    def wrapper(*args, **kwargs):
      try:
        fn(*args, **kwargs)
      except _Stop:
        calls.append({"reached": f"{module}.{fn.__name__} -> models.load_encoder"})
        if after:
          after(*args, **kwargs)
      else:
        raise AssertionError(f"{fn.__name__} returned without loading a model")
    return wrapper

  def train(config, workdir):
    calls.append(_check_training_config(config))

  def execute(name, run, common, results, workdirs, config_path=None):
    config = g["load_config"](g["find_config"](config_path), run.config_arg(common))
    calls.append(_check_evals(config) if run.pretrained else _check_training_config(config))

  if module == "hybrid_ir.train":
    g["train"] = train
  elif module == "hybrid_ir.eval":
    evaluation = g["evaluation"]  # the binary's work lives in its library
    evaluation.run = until_model(evaluation.run,
                                 after=lambda config, *a, **k: _check_evals(config))
  elif module == "hybrid_ir.export":
    g["export"] = until_model(g["export"])
  elif module in ("hybrid_ir.search", "hybrid_ir.mine"):
    g["run"] = until_model(g["run"])
  elif module == "hybrid_ir.prepare":
    g["prepare"] = lambda config, **kw: calls.append(_check_sources(config))
  elif module == "hybrid_ir.experiments":
    import types
    g["execute"] = execute
    g["report"] = types.SimpleNamespace(write_report=lambda *a: "")
  else:
    raise ValueError(f"no parse check for the binary {module}: add its stubs to _install_stubs")


def _run_one(fn, argv, calls) -> dict:
  buf = io.StringIO()
  calls.clear()
  try:
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
      fn(argv)
  except SystemExit as e:
    return {"ok": False, "error": f"exit {e.code}:\n{buf.getvalue()[-3000:]}"}
  except Exception as e:  # pylint: disable=broad-except
    return {"ok": False, "error": "".join(traceback.format_exception_only(e)).strip()
            + f"\n{buf.getvalue()[-2000:]}"}
  if not calls:
    return {"ok": False, "error": f"main returned without reaching its work:\n{buf.getvalue()}"}
  info = next((c for c in calls if isinstance(c, dict) and "batch_size" in c), {})
  return {"ok": True, "error": None, "info": info}


def _worker(spec_path: str, out_path: str) -> None:
  import runpy
  spec = json.loads(pathlib.Path(spec_path).read_text())
  module, commands = spec["module"], spec["commands"]
  os.chdir(REPO)
  sys.path.insert(0, str(REPO))
  results, calls = {}, []
  if module == "hybrid_ir.report":
    from hybrid_ir import report

    def stub(name, n_args):
      def run(*args):  # main passes --seed_sd_from as the third argument of these
        assert len(args) in (n_args, 3), (name, args)
        if len(args) == 3 and args[2] and not pathlib.Path(f"{args[2]}.json").is_file():
          raise FileNotFoundError(f"--seed_sd_from {args[2]}: no {args[2]}.json (DIR/RUN)")
        return calls.append(f"{name} {args[:2]}") or ""
      return run
    for name, n_args in (("compare_files", 3), ("before_after", 1), ("write_report", 3),
                         ("write_versus", 2)):
      setattr(report, name, stub(name, n_args))
    for cid, argv in commands:
      results[cid] = _run_one(report.main, argv, calls)
  else:
    from absl import app
    from absl import flags
    from hybrid_ir import models
    from hybrid_ir import sharding

    def stop(*args, **kwargs):
      raise _Stop()
    models.load_encoder = stop
    sharding.maybe_initialize_distributed = lambda *a, **k: False

    def fake_run(main, argv=None, flags_parser=None):
      del argv
      app.define_help_flags()
      parse = flags_parser or app.parse_flags_with_usage
      # The module's own namespace (main may come wrapped by config_flags.run).
      _install_stubs(module, sys.modules["__main__"].__dict__, calls)
      fv = flags.FLAGS

      def one(argv):
        fv.unparse_flags()
        for name in [n for n in fv if n.startswith("config.")]:
          delattr(fv, name)  # ml_collections defines a flag per override at parse time
        sys.argv = list(argv)  # ... and reads the overrides from sys.argv
        main(parse(list(argv)))

      for cid, argv in commands:
        results[cid] = _run_one(one, argv, calls)

    app.run = fake_run
    runpy.run_module(module, run_name="__main__", alter_sys=True)
  pathlib.Path(out_path).write_text(json.dumps(results))


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
  _worker(sys.argv[2], sys.argv[3])
