"""How the train step updates the token-embedding table: dense, lazy, or frozen
(`config.optimizer.embedding_update`).

  dense   AdamW on every row, every step: exactly optax.adamw with its clip over the whole params
          tree, and its optimizer state (the default; `DenseTable`).
  lazy    only the rows the batch's token ids touch, as TF's LazyAdam and sparse embeddings do.
  frozen  the table is not trained (no gradient, no moments); the rest is, as in `dense`.

Why: e5-small's word-embedding table is 96M of its 118M parameters (250k rows), and a batch of
32 queries x 32 tokens + 32 passages x 64 touches at most 3,072 rows. optax on the whole tree
builds a [250k, 384] gradient that is zero almost everywhere, and an update of the same size,
and XLA keeps a copy of the table for the forward pass's reads. Here the touched rows are
gathered into a compact table before the forward pass (`compact`), so the gradient is
[rows, D]. lazy then updates those rows' values and moments in place (`adamw_rows`); dense
updates every row from it in place, as optax would with the dense gradient (`adamw_table`).

Exactness: dense is optax's arithmetic (tests/test_table_update.py: parameters, moments, loss and
norms to float rounding). Under lazy the gradient, its global norm and the clip are exact (an
untouched row's gradient is zero). The update is not: dense AdamW keeps moving a row after its
last touch (its first moment decays but is not zero) and decays every row's weights each step;
lazy leaves untouched rows and their moments as they are. With no weight decay and the same rows
touched every step the two are equal (tests/test_table_update.py); on real data
benchmarks/README.md measures the mAP effect.
"""
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

MODES = ("dense", "lazy", "frozen")
TOKEN_KEYS = ("query", "passage", "negative")


def get_path(tree: dict, path: Sequence[str]) -> Any:
  for k in path:
    tree = tree[k]
  return tree


def with_path(tree: dict, path: Sequence[str], value) -> dict:
  """A copy of nested dict `tree` with the leaf at `path` replaced (value None: removed)."""
  head, *rest = path
  out = dict(tree)
  if rest:
    out[head] = with_path(tree[head], rest, value)
  elif value is None:
    del out[head]
  else:
    out[head] = value
  return out


def compact(params: dict, batch: dict, path: Sequence[str]) -> tuple[dict, dict, jax.Array]:
  """(params with the table at `path` cut to the rows the batch uses, the batch with its token
  ids renumbered into those rows, the rows).

  rows: [n] sorted unique ids of every token dict of the batch (TOKEN_KEYS), n = their total
  count (a static shape); unused slots hold len(table), which gathers zeros and which the
  scatters of `adamw_rows` drop. The encoder computes the same function on the result.
  """
  table = get_path(params, path)
  keys = [k for k in TOKEN_KEYS if k in batch]
  ids = jnp.concatenate([batch[k]["input_ids"].reshape(-1) for k in keys])
  rows = jnp.unique(ids, size=ids.size, fill_value=table.shape[0])
  sub = table.at[rows].get(mode="fill", fill_value=0)

  def renumber(tokens):
    ids = tokens["input_ids"]
    return dict(tokens, input_ids=jnp.searchsorted(rows, ids).astype(ids.dtype))
  return with_path(params, path, sub), dict(batch, **{k: renumber(batch[k]) for k in keys}), rows


def adamw_rows(table, mu, nu, rows, grad, *, lr, count, b1: float, b2: float, eps: float,
               weight_decay: float):
  """optax.adamw's update on `rows` of `table` only: optax's own Adam on the gathered moments
  (bias-corrected after `count` earlier updates), decoupled weight decay, learning rate `lr`.
  Returns (table, mu, nu, update [rows, D]); rows equal to len(table) are dropped."""
  take = lambda x: x.at[rows].get(mode="fill", fill_value=0)  # noqa: E731
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
  direction, moments = adam.update(grad, optax.ScaleByAdamState(count, take(mu), take(nu)))
  update = -lr * (direction + weight_decay * take(table))
  return (table.at[rows].add(update, mode="drop"), mu.at[rows].set(moments.mu, mode="drop"),
          nu.at[rows].set(moments.nu, mode="drop"), update)


class SparseTable:
  """The `lazy` and `frozen` updates of a train step (see the module docstring).

  trainable = {'params', 'loss_params'}; the table is params at `path`. `rest_tx` is the
  optimizer of everything else, *without* clipping: the clip is taken here over the whole
  gradient (table rows included, under `lazy`) as optax's would be over the dense one.
  Optimizer state: {'rest': rest_tx's state, 'table': {'mu', 'nu'}} ('table' under lazy only).
  """

  def __init__(self, mode: str, path: Sequence[str], rest_tx: optax.GradientTransformation,
               lr: Callable, grad_clip: float, b1: float, b2: float, eps: float,
               weight_decay: float):
    if mode not in ("lazy", "frozen"):
      raise ValueError(f"SparseTable mode {mode!r}; valid: lazy, frozen")
    self.mode, self.path, self.rest_tx, self.lr = mode, tuple(path), rest_tx, lr
    self.clip = optax.clip_by_global_norm(grad_clip) if grad_clip else optax.identity()
    self.adam = dict(b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)

  def split(self, trainable: dict) -> tuple[dict, Any]:
    """(trainable without the table, the table)."""
    params = trainable["params"]
    return (dict(trainable, params=with_path(params, self.path, None)),
            get_path(params, self.path))

  def merge(self, rest: dict, table) -> dict:
    return dict(rest, params=with_path(rest["params"], self.path, table))

  def init(self, trainable: dict) -> dict:
    rest, table = self.split(trainable)
    state = {"rest": self.rest_tx.init(rest)}
    if self.mode == "lazy":
      state["table"] = {"mu": jnp.zeros_like(table), "nu": jnp.zeros_like(table)}
    return state

  def shardings(self, param_sh: dict, abstract_trainable: dict, replicated) -> dict:
    """The optimizer state's shardings: moments as their params, everything else replicated."""
    rest_sh, table_sh = self.split(param_sh)
    rest_abstract, _ = self.split(abstract_trainable)
    out = {"rest": optax.tree_map_params(
        self.rest_tx, lambda _, s: s, jax.eval_shape(self.rest_tx.init, rest_abstract), rest_sh,
        transform_non_params=lambda _: replicated)}
    if self.mode == "lazy":
      out["table"] = {"mu": table_sh, "nu": table_sh}
    return out

  def step(self, loss_and_grads, trainable: dict, opt_state: dict, batch: dict, count):
    """One update: ((loss, metrics), grads, new trainable, updates, new opt_state). grads and
    updates hold the table's touched rows only (lazy) or no table (frozen), so their norms are
    those of the dense tree."""
    sub_params, sub_batch, rows = compact(trainable["params"], batch, self.path)
    (loss, m), grads = loss_and_grads(dict(trainable, params=sub_params), sub_batch)
    rest_grads, table_grad = self.split(grads)
    rest, table = self.split(trainable)
    if self.mode == "frozen":
      clipped, _ = self.clip.update(rest_grads, optax.EmptyState())
      updates, rest_state = self.rest_tx.update(clipped, opt_state["rest"], rest)
      new = self.merge(optax.apply_updates(rest, updates), table)
      return (loss, m), rest_grads, new, updates, {"rest": rest_state}
    (clipped, table_clipped), _ = self.clip.update((rest_grads, table_grad), optax.EmptyState())
    updates, rest_state = self.rest_tx.update(clipped, opt_state["rest"], rest)
    table, mu, nu, table_update = adamw_rows(
        table, opt_state["table"]["mu"], opt_state["table"]["nu"], rows, table_clipped,
        lr=self.lr(count), count=count, **self.adam)
    new = self.merge(optax.apply_updates(rest, updates), table)
    return ((loss, m), grads, new, self.merge(updates, table_update),
            {"rest": rest_state, "table": {"mu": mu, "nu": nu}})


def adamw_table(table, mu, nu, rows, grad, *, lr, count, b1: float, b2: float, eps: float,
                weight_decay: float, axis: int = 0, block_elements: int = 2**21):
  """optax.adamw's update of the whole `table` (every row, weight decay included) when its
  gradient is zero except on `rows`, where it is `grad` [rows, D]; rows equal to len(table) are
  dropped. optax's Adam after `count` earlier updates, learning rate `lr` (a scalar).
  Returns (table, mu, nu, the squared norm of the update).

  The same arithmetic as optax: each moment's update `(1 - b) * g + b * m` is taken as the
  decayed moments `b * m` for every row, to which the rows' `(1 - b) * g` are scatter-added
  (0 elsewhere, as dense); the parameters then move by optax's step from the new moments. No
  [vocab, D] gradient exists, and XLA updates the table and both moments in place: the moments
  are read once, and the table's update is computed after the gradient (through the moments),
  so after the forward pass's reads of the table. Its norm is summed in blocks along `axis`
  (pass an axis the table is not sharded along), `block_elements` at a time, before the table
  is written, so that no [vocab, D] update is kept either.
  """
  mu = (b1 * mu).at[rows].add((1 - b1) * grad, mode="drop")
  nu = (b2 * nu).at[rows].add((1 - b2) * grad ** 2, mode="drop")
  count_inc = optax.safe_increment(count)

  def update(p, m, v):  # optax.scale_by_adam's direction, add_decayed_weights, the rate
    m_hat = optax.tree.bias_correction(m, b1, count_inc)
    v_hat = optax.tree.bias_correction(v, b2, count_inc)
    return -lr * (m_hat / (jnp.sqrt(v_hat) + eps) + weight_decay * p)

  sq = _sum_of_squares_by_blocks(update, (table, mu, nu), axis, block_elements)
  # The table is written after its update's norm is read (a dependency XLA keeps; the norm is
  # NaN only where the update has a NaN).
  new = table + jnp.where(jnp.isnan(sq), jnp.nan, update(table, mu, nu))
  return new.astype(table.dtype), mu, nu, sq


def _sum_of_squares_by_blocks(f: Callable, arrays: tuple, axis: int,
                              block_elements: int) -> jax.Array:
  """sum(f(*arrays) ** 2) for elementwise f of same-shaped 2-D arrays, one block of rows
  (axis 0) or columns (axis 1) at a time, so that f's result is never held whole."""
  n = arrays[0].shape[axis]
  size = min(n, max(1, block_elements // (arrays[0].size // n)))

  def body(i, total):
    start = jnp.minimum(i * size, n - size)  # the last block ends at n, overlapping the one before
    part = f(*(jax.lax.dynamic_slice_in_dim(x, start, size, axis) for x in arrays))
    fresh = jnp.expand_dims(start + jnp.arange(size) >= i * size, 1 - axis)  # not yet counted
    return total + jnp.sum(jnp.where(fresh, jnp.square(part), 0), dtype=jnp.float32)
  return jax.lax.fori_loop(0, -(-n // size), body, jnp.zeros((), jnp.float32))


class DenseTable:
  """The `dense` update, exactly optax's AdamW with its global-norm clip on the whole tree,
  computed without [vocab, D] gradient or update buffers (see `adamw_table`); used where the
  encoder names a token table.

  trainable = {'params', 'loss_params'}; the table is params at `path`. `tx` is the whole tree's
  optimizer with `optax.identity()` standing in for its clip (train_step.make_optimizer's clip_slot):
  the optimizer state is the one the clipped optax optimizer keeps, so checkpoints of either
  restore into the other. The clip (global norm `grad_clip`; 0: off) is taken here over the
  gradient of the compact table (`compact`) and the rest: the dense norm, as every other row's
  gradient is zero. tx updates everything but the table (given an empty stand-in for it);
  `adamw_table` updates the table and its moments, with tx's schedule `lr` at the state's
  schedule count and its Adam arguments b1 .. weight_decay (the table is a matrix, so weight
  decay applies to it).
  """

  def __init__(self, path: Sequence[str], tx: optax.GradientTransformation, lr: Callable,
               grad_clip: float, b1: float, b2: float, eps: float, weight_decay: float):
    self.path, self.tx, self.lr = ("params", *path), tx, lr
    self.clip = optax.clip_by_global_norm(grad_clip) if grad_clip else optax.identity()
    self.adam = dict(b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    self.axis = 0  # the table's axis to sum its update's norm along (`shardings` may change it)

  def init(self, trainable: dict):
    return self.tx.init(trainable)

  def shardings(self, param_sh: dict, abstract_trainable: dict, replicated):
    """The optimizer state's shardings: moments as their params, everything else replicated.
    Also notes an axis the table is not sharded along, for `adamw_table`."""
    spec = tuple(get_path(param_sh, self.path).spec) + (None, None)
    self.axis = 1 if spec[0] is not None and spec[1] is None else 0
    return optax.tree_map_params(
        self.tx, lambda _, s: s, jax.eval_shape(self.tx.init, abstract_trainable), param_sh,
        transform_non_params=lambda _: replicated)

  def step(self, loss_and_grads, trainable: dict, opt_state, batch: dict, count=None):
    """One update: ((loss, metrics), grads, new trainable, updates, new opt_state), the counters
    read from opt_state (`count` is unused). grads hold the compact table's gradient, and updates
    the norm of the table's update in its place (a scalar), so that the norms of both trees are
    those of the dense ones."""
    del count
    path = self.path
    sub_params, sub_batch, rows = compact(trainable["params"], batch, path[1:])
    (loss, m), grads = loss_and_grads(dict(trainable, params=sub_params), sub_batch)
    clipped, _ = self.clip.update(grads, optax.EmptyState())
    table = get_path(trainable, path)
    adam = optax.tree_utils.tree_get(opt_state, "ScaleByAdamState")
    lr = self.lr(optax.tree_utils.tree_get(opt_state, "ScaleByScheduleState").count)
    empty = jnp.zeros((0, *table.shape[1:]), table.dtype)

    def with_table(tree, value):
      return with_path(tree, path, value)

    def with_moments(state, mu, nu):
      adam = optax.tree_utils.tree_get(state, "ScaleByAdamState")
      return optax.tree_utils.tree_set(state, ScaleByAdamState=adam._replace(
          mu=with_table(adam.mu, mu), nu=with_table(adam.nu, nu)))
    rest = with_table(trainable, empty)
    updates, new_state = self.tx.update(with_table(clipped, empty),
                                        with_moments(opt_state, empty, empty), rest)
    table, mu, nu, sq = adamw_table(
        table, get_path(adam.mu, path), get_path(adam.nu, path), rows, get_path(clipped, path),
        lr=lr, count=adam.count, axis=self.axis, **self.adam)
    new = with_table(optax.apply_updates(rest, updates), table)
    return ((loss, m), grads, new, with_table(updates, jnp.sqrt(sq)),
            with_moments(new_state, mu, nu))
