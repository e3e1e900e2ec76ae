"""`--config path[:arg]` + `--config.a.b=v` flags, with misspelt keys reported clearly.

ml_collections' DEFINE_config_file already rejects an unknown override, but as a traceback naming
only a near miss. `parse_flags` checks every `--config.<key>` against the loaded config first and
exits with the offending key and the valid keys at that level.

The resume policy (which differences from a checkpoint's saved config a run may resume under)
is beside the checkpoint: `checkpoint.check_resume_config`.

Usage (in a binary):
  _CONFIG = config_flags.define_config()
  config_flags.run(main)   # app.run with parse_flags; --help exits 0
"""
from collections.abc import Mapping
import importlib.util
import pathlib
import re
import sys
from typing import Any

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags as mlc_flags

# --config.a.b=v, --config.a.b v, --noconfig.flag (boolean false).
_OVERRIDE = re.compile(r"^--?(?:no)?(?P<name>[A-Za-z_]\w*)\.(?P<key>[\w.]+)(?:=.*)?$")


def define_config(name: str = "config", help_string: str = "the config: model, data, "
                  "schedule (configs/*.py).") -> flags.FlagHolder:
  """DEFINE_config_file, locking the config (no new keys may appear via overrides), listed
  first in the binary's --help as `--config: file[:arg] (required): <help_string> ...`.

  ml_collections defines the flag in its own module, which --help leaves out (only --helpfull
  showed it): it is declared a key flag of the program, and the help lists it first.
  """
  holder = mlc_flags.DEFINE_config_file(
      name, None, f"file[:arg] (required): {help_string} The optional :arg goes to the file's "
      f"get_config(arg), e.g. configs/recipe.py:seed=1; any key is overridden with "
      f"--{name}.<key>=<value>.", lock_config=True)
  flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
  _list_first_in_help(name)
  return holder


def require(*names: str, hint: str = "--help lists the flags") -> None:
  """Raises app.UsageError '--<name> is required (<hint>)' for the first of the flags `names`
  that is not set. For a binary's main(); the usage error prints the binary's short help."""
  for name in names:
    if not flags.FLAGS[name].value:
      raise app.UsageError(f"--{name} is required ({hint})")


def define_model_flags(verb: str) -> tuple[flags.FlagHolder, flags.FlagHolder, flags.FlagHolder]:
  """--workdir, --step and --pretrained: which weights a tool `verb`s with, a finished checkpoint
  of a training workdir or the config's model as loaded. Listed in the binary's --help.

  Inputs: verb, e.g. 'search', words the help. Used by search, mine and export (eval polls a
  workdir instead); `hybrid_ir.checkpoint.restore_params` reads what they choose.
  """
  holders = (
      flags.DEFINE_string("workdir", None, f"Training workdir whose checkpoint to {verb} with."),
      flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest finished one)."),
      flags.DEFINE_bool("pretrained", False, f"{verb.capitalize()} with the config's model as "
                        "loaded, no checkpoint."))
  for holder in holders:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])
  return holders


def _list_first_in_help(name: str) -> None:
  """Makes --help (absl's main_module_help, which sorts a module's flags by name) show --<name>
  first."""
  cls = flags.FlagValues
  original = getattr(cls.main_module_help, "original", cls.main_module_help)

  def main_module_help(self) -> str:
    lines = original(self).split("\n")
    start = next((i for i, l in enumerate(lines) if l.startswith(f"  --{name}:")), None)
    if start is None:
      return "\n".join(lines)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("  -")),
               len(lines))
    block = lines[start:end]
    rest = lines[:start] + lines[end:]
    header = next(i for i, l in enumerate(rest) if l.strip()) + 1  # the "<program>:" line
    return "\n".join(rest[:header] + block + rest[header:])

  main_module_help.original = original
  cls.main_module_help = main_module_help


def parse_arg(arg: str | None, defaults: Mapping[str, Any], *, where: str,
              text_keys: tuple[str, ...] = ()) -> dict[str, Any]:
  """A config file's `key=value,key=value` arg -> `defaults` updated, each value converted to its
  default's type; `text_keys` may be given too (as strings) and have no default.

  Inputs: the arg (None or '' gives the defaults), where (names the arg in errors, e.g.
  'configs/own_data.py arg'). Used by every config that takes such an arg: hybrid_ir.grids'
  experiment arg, configs/own_data.py. An item that is not key=value, or whose key is unknown,
  is one ValueError naming it and the valid keys.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in (*defaults, *text_keys):
      raise ValueError(f"{where} {item!r}: expected key=value with key in "
                       f"{sorted((*defaults, *text_keys))}")
    out[key] = value if key not in defaults else type(defaults[key])(value)
  return out


def load_config_file(spec: str, overrides: Mapping[str, Any] | None = None
                     ) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:arg]' -> get_config(arg) (as ml_collections does), then sets each
  dotted key of `overrides` ('checkpoint.every': 3), as `--config.checkpoint.every=3` would
  (an unknown key: check_key's error)."""
  path, _, arg = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"config file not found: {path!r} (from --config={spec!r})")
  module_spec = importlib.util.spec_from_file_location("_hybrid_ir_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} has no get_config(arg=None)")
  config = module.get_config(arg) if arg else module.get_config()
  for key, value in (overrides or {}).items():
    check_key(config, key)
    *parents, last = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[last] = value
  return config


def check_key(config: ml_collections.ConfigDict, key: str, flag: str = "config") -> None:
  """Raises KeyError naming `key` and the valid keys at the level where it goes wrong."""
  node, done = config, []
  for part in key.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      valid = sorted(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
      where = f"--{flag}.{'.'.join(done)}" if done else f"--{flag}"
      raise KeyError(f"unknown config key --{flag}.{key}: {where} has no field {part!r}; "
                     f"valid: {valid if valid else '(not a dict: ' + type(node).__name__ + ')'}")
    node, done = node[part], done + [part]


def overrides(argv: list[str], flag: str = "config") -> tuple[str | None, list[str]]:
  """(config spec, [override keys]) found in argv."""
  spec, keys = None, []
  for i, a in enumerate(argv):
    if a.startswith(f"--{flag}="):
      spec = a.split("=", 1)[1]
    elif a == f"--{flag}" and i + 1 < len(argv):
      spec = argv[i + 1]
    elif (m := _OVERRIDE.match(a)) and m["name"] == flag:
      keys.append(m["key"])
  return spec, keys


def parse_flags(argv: list[str], flag: str = "config") -> list[str]:
  """absl `flags_parser`: validates the override keys, then parses the flags as usual."""
  spec, keys = overrides(argv, flag)
  if spec and keys:
    config = load_config_file(spec)
    try:
      for k in keys:
        check_key(config, k, flag)
    except KeyError as e:
      print(f"FATAL: {e.args[0]}", file=sys.stderr)
      sys.exit(2)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
    sys.exit(2)


HELP_FLAGS = {"--help", "-h", "-?", "--helpshort", "--helpfull"}


def _short(e: BaseException, lines: int = 15) -> str:
  """An error as a person reads it: our errors are their message; others get their type, and
  a long message (an XLA or TensorStore dump) its first lines."""
  text = str(e).strip()
  ours = type(e).__module__.startswith("hybrid_ir") or isinstance(
      e, (ValueError, OSError, KeyError, FloatingPointError, RuntimeError))
  if not ours or not text:
    text = f"{type(e).__name__}: {text}"
  kept = text.splitlines()
  return "\n".join(kept[:lines] + (["..."] if len(kept) > lines else []))


def _with_short_errors(main):
  """main, whose errors end the program with one message on stderr (exit 1) and their traceback
  in the log file, or on the console with --verbose."""
  def guarded(argv):
    try:
      main(argv)
    except (SystemExit, KeyboardInterrupt, app.UsageError):
      raise
    except Exception as e:  # noqa: BLE001
      if flags.FLAGS.verbose:
        raise
      from hybrid_ir import run_dir  # pylint: disable=g-import-not-at-top
      where = run_dir.log_traceback(e)
      program = "hybrid_ir." + pathlib.Path(sys.argv[0]).stem
      hint = f"traceback in {where}" if where else "--verbose shows the traceback"
      sys.exit(f"{program}: error: {_short(e)}\n  ({hint})")
  return guarded


def run(main, flag: str = "config") -> None:
  """absl's app.run(main) with `parse_flags`, and errors as one message (`--verbose`: with their
  traceback). absl exits 1 after printing --help; asking for help is no failure, so that exit
  becomes 0."""
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "On an error, print its traceback on the console too "
                      "(it is always in the log file, where the program has one).")
  try:
    app.run(_with_short_errors(main), flags_parser=lambda argv: parse_flags(argv, flag))
  except SystemExit as e:
    if e.code == 1 and HELP_FLAGS & set(sys.argv[1:]):
      sys.exit(0)
    raise


class ConfigError(ValueError):
  """A config that loads but lacks what a binary needs (the binary says so in one line)."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'a.b': v, 'a.c[0].d': v} of a JSON-like tree (lists of dicts indexed, other lists whole)."""
  out = {}
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
  elif isinstance(tree, (list, tuple)) and any(isinstance(v, Mapping) for v in tree):
    for i, v in enumerate(tree):
      out.update(flatten(v, f"{prefix}[{i}]"))
  else:
    out[prefix] = list(tree) if isinstance(tree, tuple) else tree
  return out


def differences(a: Mapping, b: Mapping, absent: Any = "<absent>") -> list[tuple[str, Any, Any]]:
  """[(key, a's value, b's value)] wherever two JSON-like trees differ, keys flattened as
  `flatten` names them ('a.b', 'a.c[0].d') and sorted; a key missing on one side shows `absent`.

  Used wherever saved settings are compared with wanted ones: the resume policy
  (checkpoint.config_changes), stores (hybrid_ir.data), embedding caches and experiment runs.
  """
  fa, fb = flatten(a), flatten(b)
  return [(k, fa.get(k, absent), fb.get(k, absent)) for k in sorted(set(fa) | set(fb))
          if fa.get(k, absent) != fb.get(k, absent)]

