"""`--config path[:arg]` + `--config.a.b=v` flags, with misspelt keys reported clearly.

ml_collections' DEFINE_config_file already rejects an unknown override, but as a traceback naming
only a near miss. `parse_flags` checks every `--config.<key>` against the loaded config first and
exits with the offending key and the valid keys at that level.

Usage (in a binary):
  _CONFIG = config_flags.define_config()
  app.run(main, flags_parser=config_flags.parse_flags)
"""
import importlib.util
import pathlib
import re
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags as mlc_flags

# --config.a.b=v, --config.a.b v, --noconfig.flag (boolean false).
_OVERRIDE = re.compile(r"^--?(?:no)?(?P<name>[A-Za-z_]\w*)\.(?P<key>[\w.]+)(?:=.*)?$")


def define_config(name: str = "config", help_string: str = "Config file, path[:arg]."
                  ) -> flags.FlagHolder:
  """DEFINE_config_file, locking the config (no new keys may appear via overrides)."""
  return mlc_flags.DEFINE_config_file(name, None, help_string, lock_config=True)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:arg]' -> get_config(arg) (as ml_collections does)."""
  path, _, arg = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"config file not found: {path!r} (from --config={spec!r})")
  module_spec = importlib.util.spec_from_file_location("_hybrid_ir_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} has no get_config(arg=None)")
  return module.get_config(arg) if arg else module.get_config()


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
