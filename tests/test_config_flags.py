"""hybrid_ir.config_flags: config files with their arg and dotted overrides, misspelt keys named
at the level where they go wrong, the `key=value` arg parser, nested-settings diffs, required
flags and the one-message errors. (The files under configs/ are tests/test_configs.py's.)"""
import pathlib

from absl import app
from absl import flags
import pytest

from hybrid_ir import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config_file(tmp_path, body):
  path = tmp_path / "my_config.py"
  path.write_text("import ml_collections\n\n" + body)
  return str(path)


NESTED = '''
def get_config(arg=None):
  return ml_collections.ConfigDict(dict(
      arg=arg, steps=10, optimizer=dict(lr=0.1, schedule=dict(warmup=5))))
'''


def test_load_config_file_passes_the_arg_and_sets_nested_overrides(tmp_path):
  path = _config_file(tmp_path, NESTED)
  assert config_flags.load_config_file(path).arg is None
  config = config_flags.load_config_file(f"{path}:seed=1,size=mini",
                                         {"optimizer.schedule.warmup": 2, "steps": 3})
  assert config.arg == "seed=1,size=mini"  # everything after the first ':'
  assert (config.steps, config.optimizer.lr, config.optimizer.schedule.warmup) == (3, 0.1, 2)


def test_load_config_file_names_a_missing_file_a_file_without_get_config_and_bad_keys(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"config file not found: '.*nope\.py' \(from "
                                              r"--config='.*nope\.py:x'\)"):
    config_flags.load_config_file(f"{tmp_path}/nope.py:x")
  empty = _config_file(tmp_path, "X = 1\n")
  with pytest.raises(ValueError, match=r"config file .*my_config\.py has no get_config"):
    config_flags.load_config_file(empty)
  path = _config_file(tmp_path, NESTED)
  with pytest.raises(KeyError, match=r"unknown config key --config\.stpes: --config has no field "
                                     r"'stpes'; valid: \['arg', 'optimizer', 'steps'\]"):
    config_flags.load_config_file(path, {"stpes": 1})
  with pytest.raises(KeyError, match=r"--config\.optimizer\.schedule has no field 'warm'; "
                                     r"valid: \['warmup'\]"):
    config_flags.load_config_file(path, {"optimizer.schedule.warm": 1})
  with pytest.raises(KeyError, match=r"--config\.steps has no field 'x'; valid: \(not a dict: "
                                     r"int\)"):
    config_flags.load_config_file(path, {"steps.x": 1})


def test_overrides_finds_the_spec_and_the_override_keys_of_one_flag():
  argv = ["train.py", "--config", "configs/demo.py:runlocal", "--config.total_steps=3",
          "--config.optimizer.lr", "0.1", "--noconfig.input.packing", "--workdir=w",
          "--other.key=1"]
  assert config_flags.overrides(argv) == ("configs/demo.py:runlocal",
                                          ["total_steps", "optimizer.lr", "input.packing"])
  assert config_flags.overrides(["x", "--config=c.py", "-config.a=1"]) == ("c.py", ["a"])
  assert config_flags.overrides(["x", "--teacher=t.py", "--teacher.a.b=1"], flag="teacher") == (
      "t.py", ["a.b"])
  assert config_flags.overrides(["x", "--workdir=w"]) == (None, [])


def test_parse_flags_exits_2_naming_a_misspelt_override_before_parsing(tmp_path, capsys):
  path = _config_file(tmp_path, NESTED)
  with pytest.raises(SystemExit) as e:
    config_flags.parse_flags(["x", f"--config={path}", "--config.optimizer.lrr=1"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("FATAL: unknown config key --config.optimizer.lrr: --config.optimizer "
                        "has no field 'lrr'; valid: ['lr', 'schedule']"), err


def test_require_names_the_first_unset_flag_and_the_hint(monkeypatch):
  fv = flags.FlagValues()
  flags.DEFINE_string("corpus", "c.jsonl", "", flag_values=fv)
  flags.DEFINE_string("queries", None, "", flag_values=fv)
  flags.DEFINE_string("qrels", None, "", flag_values=fv)
  monkeypatch.setattr(flags, "FLAGS", fv)
  config_flags.require("corpus")
  with pytest.raises(app.UsageError, match=r"^--queries is required \(--help lists the flags\)$"):
    config_flags.require("corpus", "queries", "qrels")
  with pytest.raises(app.UsageError, match=r"^--qrels is required \(with --run\)$"):
    config_flags.require("qrels", hint="with --run")


def test_short_errors_are_the_message_foreign_ones_carry_their_type_and_long_ones_are_cut():
  assert config_flags._short(ValueError("bad value 'x'")) == "bad value 'x'"
  assert config_flags._short(config_flags.ConfigError("no evals")) == "no evals"
  assert config_flags._short(TypeError("not iterable")) == "TypeError: not iterable"
  assert config_flags._short(KeyError()) == "KeyError: "
  long = config_flags._short(RuntimeError("\n".join(f"line {i}" for i in range(40))))
  assert long.splitlines() == [f"line {i}" for i in range(15)] + ["..."]


def test_flatten_names_nested_keys_and_indexes_lists_of_dicts_only():
  tree = {"a": {"b": 1, "c": [{"d": 2}, {"e": {"f": 3}}]}, "langs": ("en", "de"),
          "ids": [1, 2], "empty": {}}
  assert config_flags.flatten(tree) == {"a.b": 1, "a.c[0].d": 2, "a.c[1].e.f": 3,
                                        "langs": ["en", "de"], "ids": [1, 2]}
  assert config_flags.flatten(7) == {"": 7}


def test_overrides_set_dotted_keys_and_name_a_misspelt_one(monkeypatch):
  monkeypatch.chdir(REPO)
  config = config_flags.load_config_file("configs/demo.py", {"checkpoint.every": 7,
                                                             "total_steps": 9})
  plain = config_flags.load_config_file("configs/demo.py")
  assert (config.checkpoint.every, config.total_steps) == (7, 9)
  assert (plain.checkpoint.every, plain.total_steps) != (7, 9)
  # Nothing but the two keys changes.
  a, b = (config_flags.flatten(c.to_dict()) for c in (plain, config))
  assert sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)) == [
      "checkpoint.every", "total_steps"]
  with pytest.raises(KeyError, match="--config.checkpoint has no field 'evry'"):
    config_flags.load_config_file("configs/demo.py", {"checkpoint.evry": 7})


def test_parse_arg_types_values_by_their_defaults_and_names_bad_items():
  defaults = dict(steps=100, lr=3e-5, model="e5-small")
  a = config_flags.parse_arg("steps=7,lr=0.1,data=x.jsonl", defaults, where="my arg",
                             text_keys=("data",))
  assert a == dict(steps=7, lr=0.1, model="e5-small", data="x.jsonl")
  assert config_flags.parse_arg(None, defaults, where="my arg") == defaults
  with pytest.raises(ValueError, match=r"my arg 'alpha=1': expected key=value with key in "
                                       r"\['lr', 'model', 'steps'\]"):
    config_flags.parse_arg("steps=7,alpha=1", defaults, where="my arg")
  with pytest.raises(ValueError, match="my arg 'steps': expected key=value"):
    config_flags.parse_arg("steps", defaults, where="my arg")
  with pytest.raises(ValueError, match="invalid literal"):
    config_flags.parse_arg("steps=many", defaults, where="my arg")


def test_differences_flattens_both_trees_and_names_absent_keys():
  saved = {"optimizer": {"lr": 0.1, "b1": 0.9}, "langs": ("en", "de"), "sources": [{"n": 1}]}
  wanted = {"optimizer": {"lr": 0.2}, "langs": ["en", "de"], "sources": [{"n": 2}], "new": 1}
  assert config_flags.differences(saved, wanted) == [
      ("new", "<absent>", 1), ("optimizer.b1", 0.9, "<absent>"), ("optimizer.lr", 0.1, 0.2),
      ("sources[0].n", 1, 2)]
  assert config_flags.differences(saved, saved) == []
  assert config_flags.differences({"a": 1}, {}, absent=None) == [("a", 1, None)]
