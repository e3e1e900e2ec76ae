"""The package stands on its own: every module imports, no import cycle (by parsing imports), and
a non-editable `pip install .` runs the binaries from another directory, where configs/ and
results/ of the checkout are not around."""
import ast
import importlib
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import venv

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hybrid_ir"


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
  """hybrid_ir modules that `name` imports anywhere (module level or inside functions: a lazy
  import still closes a cycle at run time)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        up = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(up + ([base] if base else []))
      # `from pkg import mod` imports the module pkg.mod; `from mod import name`, the module.
      found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                   for a in node.names)
  out = set()
  for target in found:
    while target and target not in modules:  # `import a.b.c` of a name inside a module
      target = target.rpartition(".")[0]
    if target and target != name:
      out.add(target)
  return out


def test_the_package_has_no_import_cycle():
  modules = _modules()
  graph = {m: _imports(m, p, modules) for m, p in modules.items()}
  assert "hybrid_ir.grids" in graph["hybrid_ir.report"]  # the parser sees real imports
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == "open":
        cycle = stack[stack.index(n):] + [n]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if n not in state:
        visit(n)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)


BINARIES = {f"hybrid_ir.{b}" for b in ("train", "eval", "experiments", "search", "export",
                                       "prepare", "mine")}


def test_no_module_imports_a_binary():
  # Binaries neither: a grid runs the trainer as a program (experiments.run_trainer).
  modules = _modules()
  assert BINARIES <= set(modules)
  bad = {m: sorted(_imports(m, p, modules) & BINARIES - {m}) for m, p in modules.items()}
  assert {m: b for m, b in bad.items() if b} == {}


def test_the_library_never_imports_the_repositorys_configs():
  for name, path in _modules().items():
    for node in ast.walk(ast.parse(path.read_text())):
      mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
              [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      assert not any(m == "configs" or m.startswith("configs.") for m in mods), (
          f"{path}: imports {mods} (configs/ is not installed by pip)")


@pytest.mark.parametrize("name", sorted(_modules()))
def test_every_module_imports_and_says_what_it_is(name):
  module = importlib.import_module(name)
  # What was imported is this checkout's file (not an installed copy elsewhere), and it opens
  # with a docstring that says what it holds (the house rule for every module).
  assert pathlib.Path(module.__file__).resolve() == _modules()[name].resolve()
  assert module.__doc__ and module.__doc__.strip(), f"{name}: no module docstring"


def venv_without_hybrid_ir(env_dir: pathlib.Path) -> pathlib.Path:
  """A new venv (its python returned) that sees the test venv's packages through a .pth path
  entry, so nothing is downloaded, but not hybrid_ir: the .pth files there (the editable
  install's finder among them) are not run for a path entry."""
  venv.EnvBuilder(with_pip=False).create(env_dir)
  py = env_dir / "bin" / "python"
  site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
  pathlib.Path(site, "deps_from_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  return py


def _fresh_install(tmp_path: pathlib.Path) -> pathlib.Path:
  """A new venv with a non-editable install of a copy of this checkout's package."""
  src = tmp_path / "src"
  shutil.copytree(PACKAGE, src / "hybrid_ir", ignore=shutil.ignore_patterns("__pycache__"))
  for f in ("setup.py", "README.md"):
    shutil.copy(REPO / f, src / f)
  py = venv_without_hybrid_ir(tmp_path / "venv")
  out = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        "--no-build-isolation", str(src)], capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  return py


def test_non_editable_install_runs_the_binaries_from_another_directory(tmp_path):
  py = _fresh_install(tmp_path)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

  def run(*args, check=True):
    out = subprocess.run([py, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=600)
    if check:
      assert out.returncode == 0, f"{args}: {out.stdout[-2000:]}{out.stderr[-3000:]}"
    return out

  where = run("-c", "import hybrid_ir; print(hybrid_ir.__file__)").stdout
  assert where.startswith(str(tmp_path / "venv")), where  # the installed copy, not the checkout
  assert "compare" in run("-m", "hybrid_ir.report", "--help").stdout
  assert "--base_config" in run("-m", "hybrid_ir.experiments", "--help").stdout
  assert "--corpus" in run("-m", "hybrid_ir.search", "--help").stdout
  # The report of a committed experiment: 'all' training languages come from the library now.
  shutil.copytree(REPO / "results" / "use_m3" / "languages", elsewhere / "r" / "languages",
                  ignore=shutil.ignore_patterns("*.png", "report.md"))
  run("-m", "hybrid_ir.report", "languages", "--results", "r")
  assert ((elsewhere / "r" / "languages" / "report.md").read_text()
          == (REPO / "results" / "use_m3" / "languages" / "report.md").read_text())
  # The experiment config is the checkout's: without one the runner says so; with one it loads.
  out = run("-m", "hybrid_ir.experiments", "ratio", check=False)
  assert out.returncode != 0 and "not of the pip package" in out.stderr
  name = run("-c", "from hybrid_ir import experiments as e; "
             f"print(e.load_config(e.find_config({str(REPO / 'configs/experiments/base.py')!r}), "
             "'size=mini').model.name)").stdout
  assert name.strip() == "random_init"
