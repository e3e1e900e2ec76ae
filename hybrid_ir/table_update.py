"""How the train step updates the token-embedding table: dense, lazy, or frozen
(`config.optimizer.embedding_update`).

  dense   AdamW on every row, every step (optax.adamw over the whole params tree; the default).
  lazy    only the rows the batch's token ids touch, as TF's LazyAdam and sparse embeddings do.
  frozen  the table is not trained (no gradient, no moments); the rest is, as in `dense`.

Why: e5-small's word-embedding table is 96M of its 118M parameters (250k rows), and a batch of
32 queries x 32 tokens + 32 passages x 64 touches at most 3,072 rows. The dense step builds a
[250k, 384] gradient that is zero almost everywhere, then reads and writes the table and both
AdamW moments for every row: about 1 s of a 5 s CPU step (benchmarks/bench_peer.py). Here the
touched rows are gathered into a compact table before the forward pass (`compact`), so the
gradient is [rows, D], and AdamW updates those rows' values and moments in place (`adamw_rows`).

Exactness: the gradient, its global norm and the clip are exact (an untouched row's gradient
is zero). The update is not: dense AdamW keeps moving a row after its last touch (its first
moment decays but is not zero) and decays every row's weights each step; lazy leaves untouched
rows and their moments as they are. With no weight decay and the same rows touched every step
the two are equal (tests/test_table_update.py); on real data the README measures the mAP effect.
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
