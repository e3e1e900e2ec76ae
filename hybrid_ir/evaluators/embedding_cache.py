"""Embeddings cached on disk, keyed by the exact weights that computed them.

  params_fingerprint(params)   sha256 over every parameter (path, dtype, shape, bytes)
  cache_key(settings, params)  the key of one model's embeddings: the encoding settings (e.g. the
                               model config: tokenizer, prefixes, pooling) + the fingerprint
  encode_sharded(...)          a corpus encoded shard by shard into a directory, resumable

Why the fingerprint: a key naming the model by a user string ('e5-small', a config) stays the
same when a polling evaluator moves to the next checkpoint, and it then reports the first
checkpoint's corpus embeddings for every later one. Cheaper identities (step, file mtimes) miss
a checkpoint rewritten in place.
Recommended for: the MIRACL and LAReQA evaluators (`cache_dir`), `hybrid_ir.search`.
"""
import hashlib
import json
import logging
import os
import pathlib
from typing import Any, Callable

import numpy as np
import tqdm

from hybrid_ir import config_flags

PredictFn = Callable[[Any, list[str], str], np.ndarray]


def params_fingerprint(params: Any) -> str:
  """sha256 over every parameter leaf (path, dtype, shape, bytes): names the weights exactly.

  Costs one pass over the params on the host (e5-small: ~0.5 GB, about a second). `None` (a
  predict_fn that holds its own weights) fingerprints as the empty tree.
  """
  import jax  # pylint: disable=g-import-not-at-top  (keeps the module light for its readers)
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  for key, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(key)}|{a.dtype}|{a.shape}|".encode())
    h.update(a.reshape(-1).view(np.uint8))
  return h.hexdigest()


def cache_key(settings: Any, params: Any) -> str:
  """sha256 of (encoding settings, params fingerprint): changes with the checkpoint."""
  if hasattr(settings, "to_dict"):
    settings = settings.to_dict()
  ident = {"settings": settings, "params_sha256": params_fingerprint(params)}
  return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def _write_json_atomic(path: pathlib.Path, obj) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=1))
  os.replace(tmp, path)


def encode_sharded(predict_fn: PredictFn, params, texts: list[str], out_dir: str | pathlib.Path,
                   *, key: str, shard_size: int = 4096, kind: str = "passage",
                   progress: bool = True) -> list[np.ndarray]:
  """Encodes `texts` shard by shard into `out_dir`, resuming from the shards already written.

  Inputs:
    predict_fn: (params, texts, kind) -> [n, D]; called once per missing shard.
    key: names the model weights (`cache_key`); stored in the manifest with the texts' hash and
      shard size, and a mismatch raises instead of mixing two models' embeddings.
  Each shard is written to a temporary file and renamed, and only then recorded in
  manifest.json, so a kill at any point leaves either a complete shard or none.
  Returns the shards, memory-mapped, in text order.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  ident = {"key": key, "kind": kind, "num_texts": len(texts), "shard_size": shard_size,
           "texts_sha1": hashlib.sha1("\x00".join(texts).encode()).hexdigest()}
  manifest_path = out / "manifest.json"
  manifest = {**ident, "done": []}
  if manifest_path.is_file():
    old = json.loads(manifest_path.read_text())
    diff = config_flags.differences({k: old.get(k) for k in ident}, ident)
    if diff:
      raise ValueError(f"{manifest_path}: written for other inputs ({diff}); use another "
                       "directory or delete it")
    manifest = old
  n_shards = -(-len(texts) // shard_size)
  done = set(manifest["done"])
  todo = [i for i in range(n_shards) if not (i in done and (out / f"shard-{i:05d}.npy").is_file())]
  if done and todo:
    logging.info("%s: resuming, %d of %d shards already encoded", out, n_shards - len(todo),
                 n_shards)
  for i in tqdm.tqdm(todo, desc=f"encode {kind} shards", disable=not progress):
    chunk = texts[i * shard_size:(i + 1) * shard_size]
    emb = np.asarray(predict_fn(params, chunk, kind), np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(chunk):
      raise ValueError(f"predict_fn returned shape {emb.shape} for {len(chunk)} texts (shard {i})")
    path = out / f"shard-{i:05d}.npy"
    tmp = out / f"shard-{i:05d}.tmp.npy"
    np.save(tmp, emb)
    os.replace(tmp, path)
    manifest["done"] = sorted(set(manifest["done"]) | {i})
    manifest["dim"] = int(emb.shape[1])
    _write_json_atomic(manifest_path, manifest)
  return [np.load(out / f"shard-{i:05d}.npy", mmap_mode="r") for i in range(n_shards)]
