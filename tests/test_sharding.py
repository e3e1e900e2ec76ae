"""sharding.py on 8 fake CPU devices (conftest sets them).

Key property: the loss and gradients of one global batch do not depend on how many devices it is
split over — with hard negatives gathered across devices (where per-device label offsets go wrong
in pmap-style code).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from hybrid_ir import losses, sharding

VOCAB, DIM, LEN, B, K = 64, 16, 8, 16, 2


def tiny_encoder_params(seed=0):
  rng = np.random.default_rng(seed)
  return {"emb": jnp.asarray(rng.normal(size=(VOCAB, DIM)), jnp.float32),
          "w": jnp.asarray(rng.normal(size=(DIM, DIM)) / 4, jnp.float32)}


def encode(params, ids, mask):
  """Embedding bag + tanh layer, masked mean, L2-normalised: enough to exercise every path."""
  h = jnp.tanh(params["emb"][ids] @ params["w"])
  m = mask[..., None].astype(h.dtype)
  e = (h * m).sum(-2) / jnp.maximum(m.sum(-2), 1)
  return e / jnp.linalg.norm(e, axis=-1, keepdims=True)


def loss_fn(params, batch, variant, symmetric):
  q = encode(params, batch["q_ids"], batch["q_mask"])
  p = encode(params, batch["p_ids"], batch["p_mask"])
  n = encode(params, batch["n_ids"].reshape(-1, LEN), batch["n_mask"].reshape(-1, LEN))
  loss, _ = losses.info_nce(q, p, n, temperature=0.1, variant=variant, symmetric=symmetric,
                            identities=batch["identities"],
                            negative_identities=batch["negative_identities"])
  return loss


def make_batch(seed=1):
  rng = np.random.default_rng(seed)
  ids = lambda *s: rng.integers(0, VOCAB, size=s).astype(np.int32)
  mask = lambda *s: (rng.random(size=s) < 0.8).astype(np.int32)
  return {"q_ids": ids(B, LEN), "q_mask": mask(B, LEN), "p_ids": ids(B, LEN),
          "p_mask": mask(B, LEN), "n_ids": ids(B, K, LEN), "n_mask": mask(B, K, LEN),
          # pairs of translations: identities 0,0,1,1,...; some negatives repeat a positive
          "identities": np.repeat(np.arange(B // 2), 2).astype(np.int32),
          "negative_identities": (np.arange(B * K) % (2 * B)).astype(np.int32)}


def loss_and_grads(mesh_config, devices, variant, symmetric):
  mesh = sharding.make_mesh(mesh_config, devices)
  params = tiny_encoder_params()
  shardings = sharding.param_shardings(params, mesh, min_fsdp_size=16)
  params = jax.device_put(params, shardings)
  batch = sharding.host_local_to_global(make_batch(), mesh)
  f = jax.jit(jax.value_and_grad(functools.partial(loss_fn, variant=variant, symmetric=symmetric)),
              out_shardings=(sharding.replicated(mesh), shardings))
  loss, grads = f(params, batch)
  return loss, grads, batch


@pytest.mark.parametrize("variant,symmetric", [("standard", True), ("paper", False)])
def test_one_vs_eight_devices_same_loss_and_grads(variant, symmetric):
  devs = jax.devices()
  assert len(devs) == 8, "conftest should give 8 fake CPU devices"
  l1, g1, _ = loss_and_grads({"data": 1}, devs[:1], variant, symmetric)
  l8, g8, batch8 = loss_and_grads({"data": 8}, devs, variant, symmetric)
  # The batch really is split: each device holds 2 queries and their 4 hard negatives.
  assert {s.data.shape for s in batch8["n_ids"].addressable_shards} == {(B // 8, K, LEN)}
  l42, g42, _ = loss_and_grads({"data": 4, "fsdp": 2}, devs, variant, symmetric)
  assert float(l1) > 0
  for l, g in [(l8, g8), (l42, g42)]:
    np.testing.assert_allclose(l, l1, rtol=1e-5, atol=1e-5)
    for k in g1:
      np.testing.assert_allclose(g[k], g1[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_mesh_shapes_and_errors():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2})
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
  assert "model" in sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2}).axis_names
  with pytest.raises(ValueError, match="unknown axis 'dta'"):
    sharding.make_mesh({"dta": 8})
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.make_mesh({"data": 3, "fsdp": 2})


def test_param_sharding_rules():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  params = {"big": jnp.zeros((30, 64)), "odd": jnp.zeros((33, 31)), "small": jnp.zeros((4,)),
            "annotated": jnp.zeros((8, 8))}
  specs = {"big": None, "odd": None, "small": None, "annotated": P("model", "fsdp")}
  sh = sharding.param_shardings(params, mesh, specs, min_fsdp_size=64)
  assert sh["big"].spec == P(None, "fsdp")  # largest dim divisible by 4
  assert sh["odd"].spec == P()  # nothing divisible
  assert sh["small"].spec == P()  # too small
  assert sh["annotated"].spec == P(None, "fsdp")  # 'model' not in this mesh -> dropped


def test_host_local_to_global_errors():
  mesh = sharding.make_mesh({"data": 8})
  with pytest.raises(ValueError, match=r"\['x'\].*divisible"):
    sharding.host_local_to_global({"x": np.zeros((6, 2))}, mesh)
  with pytest.raises(TypeError, match="dtype"):
    sharding.host_local_to_global({"s": np.array(["a"] * 8)}, mesh)
  out = sharding.host_local_to_global({"x": np.arange(16).reshape(8, 2)}, mesh)
  np.testing.assert_array_equal(out["x"], np.arange(16).reshape(8, 2))


def _owners(devices, processes):
  """Process p of `processes` owns the p-th block of `devices`, as jax orders a pod's devices."""
  return {d: i * processes // len(devices) for i, d in enumerate(devices)}


@pytest.mark.parametrize("mesh_config", [{}, {"fsdp": 2}, {"data": -1, "model": 2},
                                         {"fsdp": 4, "model": 2}])
@pytest.mark.parametrize("processes", [1, 2, 4])
def test_each_process_rows_are_where_the_mesh_places_its_local_data(mesh_config, processes):
  devices = jax.devices()
  owner = _owners(devices, processes)
  mesh = sharding.make_mesh(mesh_config, devices)
  n = 24
  rows = [sharding.mesh_host_rows(mesh, n, p, processes, process_of=owner.get)
          for p in range(processes)]
  assert rows == [sharding.host_rows(n, p, processes) for p in range(processes)]
  assert sum((list(range(n))[r] for r in rows), []) == list(range(n))
  # Where host_local_to_global really puts row i, the device's owner is the process whose rows
  # hold i.
  placed = sharding.host_local_to_global({"x": np.arange(n)}, mesh)["x"]
  for shard in placed.addressable_shards:
    r = rows[owner[shard.device]]
    assert set(np.asarray(shard.data).tolist()) <= set(range(r.start, r.stop))
  # One process (this test's): its rows start at 0.
  assert sharding.process_batch_start(mesh, n) == 0


def test_a_mesh_that_does_not_place_processes_in_order_is_refused():
  devices = jax.devices()
  reversed_mesh = sharding.make_mesh({}, devices[::-1])
  with pytest.raises(ValueError, match=r"process 0 of 2 holds rows \[\(4, 5\).*not the one "
                                       r"block 0\.\.4"):
    sharding.mesh_host_rows(reversed_mesh, 8, 0, 2, process_of=_owners(devices, 2).get)
  interleaved = {d: i % 2 for i, d in enumerate(devices)}
  with pytest.raises(ValueError, match=r"process 1 of 2 holds rows \[\(1, 2\), \(3, 4\)"):
    sharding.mesh_host_rows(sharding.make_mesh({}, devices), 8, 1, 2, process_of=interleaved.get)


def test_host_rows_refuses_a_batch_that_does_not_divide_over_the_processes():
  assert sharding.host_rows(6, 1, 3) == slice(2, 4)
  with pytest.raises(ValueError, match="batch of 6 over 4 processes"):
    sharding.host_rows(6, 0, 4)
  with pytest.raises(ValueError, match="process_index 2"):
    sharding.host_rows(6, 2, 2)
