"""hybrid_ir.distill and losses.distill_mse: the term's gradients on a two-language toy, how it
joins InfoNCE, the teacher's targets (cached once per store, sizes and pivots checked), and a
short training run that logs the term per batch type."""
import json
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_ir import config_flags, distill, losses, train, train_step

CONFIG = pathlib.Path(__file__).resolve().parent / "configs_test_train.py"


def get_config(distill_cfg=None, **overrides):
  config = config_flags.load_config_file(str(CONFIG), overrides)
  if distill_cfg is not None:
    with config.unlocked():
      config.loss.distill = distill_cfg
  return config


def test_mse_gradients_pull_every_language_version_to_the_teacher_pivot():
  # One group in two languages: the student's en and de embeddings, the teacher's en one.
  teacher = jnp.array([[1.0, 0.0, 0.0]] * 2)
  student = jnp.array([[0.6, 0.8, 0.0],    # en
                       [0.0, 0.6, 0.8]])   # de
  value, grad = jax.value_and_grad(losses.distill_mse)(student, teacher)
  np.testing.assert_allclose(value, ((0.4**2 + 0.8**2) + (1 + 0.6**2 + 0.8**2)) / 2, rtol=1e-6)
  np.testing.assert_allclose(grad, 2 * (student - teacher) / 2, rtol=1e-6)
  # No gradient reaches the teacher, which is frozen.
  np.testing.assert_array_equal(jax.grad(losses.distill_mse, argnums=1)(student, teacher), 0.0)
  # Gradient descent on the term alone brings both versions onto the pivot.
  for _ in range(200):
    student = student - 0.5 * jax.grad(losses.distill_mse)(student, teacher)
  np.testing.assert_allclose(student, teacher, atol=1e-6)


def test_settings_defaults_and_bad_input():
  assert distill.settings(get_config()) is None
  assert distill.settings(get_config({"weight": 0.0})) is None
  assert distill.settings(get_config({"weight": 2})) == {
      "weight": 2.0, "only": False, "teacher": "initial", "pivot": "en"}
  with pytest.raises(ValueError, match="only=True needs a weight"):
    distill.settings(get_config({"only": True}))
  with pytest.raises(ValueError, match=r"unknown keys \['pivt'\]"):
    distill.settings(get_config({"weight": 1.0, "pivt": "de"}))


def test_term_joins_info_nce_or_stands_alone():
  from test_train_step import tiny_encoder, token_batch  # pylint: disable=g-import-not-at-top
  batch = token_batch()
  rng = np.random.default_rng(1)
  targets = rng.normal(size=(2, 8, 32)).astype(np.float32)
  targets /= np.linalg.norm(targets, axis=-1, keepdims=True)
  batch.update(teacher_query=targets[0], teacher_passage=targets[1])
  config = get_config()
  encoder = tiny_encoder(config)
  trainable = {"params": encoder.params, "loss_params": {"log_temperature": np.float32(-3.0)}}
  (plain, _), _ = train_step.make_loss_and_grads(encoder, config)(trainable, batch)
  q, p = (encoder.apply(encoder.params, batch[k]) for k in ("query", "passage"))
  mse = (losses.distill_mse(q, targets[0]) + losses.distill_mse(p, targets[1])) / 2
  (both, m), _ = train_step.make_loss_and_grads(
      encoder, get_config({"weight": 3.0}))(trainable, batch)
  np.testing.assert_allclose(m["distill_mse"], mse, rtol=1e-5)
  np.testing.assert_allclose(m["info_nce"], plain, rtol=1e-5)
  np.testing.assert_allclose(both, plain + 3.0 * mse, rtol=1e-5)
  (alone, _), grads = train_step.make_loss_and_grads(
      encoder, get_config({"weight": 3.0, "only": True}))(trainable, batch)
  np.testing.assert_allclose(alone, 3.0 * mse, rtol=1e-5)
  assert float(jax.tree.reduce(lambda a, x: a + jnp.sum(jnp.abs(x)), grads["params"], 0.0)) > 0


class FakeTeacher:
  """Embeds a text as a fixed random vector of its hash; counts its calls."""

  def __init__(self, dim):
    self.name, self.params, self.dim, self.calls = "fake", None, dim, []

  def encode(self, params, texts, kind, progress=True):
    self.calls.append((kind, len(texts)))
    return np.stack([np.random.default_rng(abs(hash((kind, t))) % 2**32).normal(size=self.dim)
                     for t in texts]).astype(np.float32)


def test_teacher_targets_are_computed_once_per_store_and_checked(shared_data, tmp_path):
  from hybrid_ir import input_pipeline  # pylint: disable=g-import-not-at-top
  # Its own store folder: the fake teacher's cache must not meet the real model's runs.
  config = get_config({"weight": 1.0}, **{"input.store_dir": str(tmp_path), "input.sources": [
      dict(name="xquad", kind="squad", path=str(shared_data / "xquad-r"), langs=("de",))]})
  sources = input_pipeline.open_sources(config.input)
  store = sources["xquad"].store
  teacher = FakeTeacher(16)
  loads = []

  def load(cfg):
    loads.append(cfg)
    return teacher

  targets = distill.teacher_targets(config, sources, load, 16)
  assert targets.shape == (store.num_groups, 2, 16)
  assert len(loads) == 1 and loads[0]["name"] == config.model.name  # 'initial': the run's model
  assert teacher.calls == [("query", store.num_groups), ("passage", store.num_groups)]
  # Row g holds group g's en (pivot) texts, though the source trains on de only.
  index = store.index("en")
  g = 5
  want = FakeTeacher(16).encode(None, store.texts("en", [index.group_query[g]]), "query")[0]
  np.testing.assert_array_equal(targets[g, 0], want)
  cache = distill.cache_path(sources["xquad"], distill.teacher_model_config(
      config, distill.settings(config)), "en")
  assert cache.exists() and cache.parent == pathlib.Path(store.directory).parent
  # A second run reads the cache and never loads the teacher.
  again = distill.teacher_targets(config, sources, load, 16)
  assert len(loads) == 1
  np.testing.assert_array_equal(again, targets)
  # Sizes must agree; the pivot must exist.
  with pytest.raises(ValueError, match="embeds to 16 dimensions, the student .* to 32"):
    distill.teacher_targets(config, sources, load, 32)
  config.loss.distill.pivot = "xx"
  with pytest.raises(ValueError, match=r"pivot='xx': source 'xquad' has no 'xx' texts"):
    distill.teacher_targets(config, sources, load, 16)
  # Batches carry their rows' targets.
  batch = distill.attach({"group": np.array([g, 0])}, targets)
  np.testing.assert_array_equal(batch["teacher_query"][0], want)
  assert distill.attach({"group": [0]}, None) == {"group": [0]}


def test_a_group_without_the_pivot_is_named():
  index = types.SimpleNamespace(group_query=np.array([0, -1, 2]), group_positive=np.array([0, 1, 2]))
  store = types.SimpleNamespace(langs=("en", "de"), num_groups=3, index=lambda lang: index,
                                group_ids=lambda rows: [f"q{int(r)}" for r in rows])
  source = types.SimpleNamespace(name="own", store=store)
  with pytest.raises(ValueError, match=r"1 of 3 groups of source 'own' have no 'en' version "
                                       r"\(e.g. group ids \['q1'\]\); name a pivot"):
    distill.pivot_rows(source, "en")


def test_training_on_the_term_alone_lowers_it_and_logs_it_per_batch_type(tmp_path):
  # The teacher: the same tiny BERT from another seed, whose embeddings the student must learn.
  config = get_config(total_steps=12, log_every=3)
  teacher = dict(config.model.to_dict(), seed=1)
  with config.unlocked():
    config.loss.distill = {"weight": 1.0, "only": True, "teacher": teacher}
  train.train(config, tmp_path)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  per_type = {k for r in rows for k in r if k.startswith("train/distill_mse_")}
  assert per_type and {k.rsplit("_", 1)[1] for k in per_type} <= {"mono", "cross"}
  assert all("train/info_nce" in r for r in rows)  # still measured, though not trained on
  for r in rows:
    np.testing.assert_allclose(r["train/loss"], r["train/distill_mse"], rtol=1e-5)
  assert rows[-1]["train/distill_mse"] < 0.8 * rows[0]["train/distill_mse"], rows
