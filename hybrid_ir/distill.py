"""Multilingual knowledge distillation as a loss term (Reimers & Gurevych 2020, arXiv 2004.09813).

A frozen teacher embeds the pivot-language version (en by default) of every parallel group's
query and positive passage. The train step adds, for every row of a batch, the squared distance
between the student's embedding of that row's query (passage), in whatever language the batch
type drew, and the teacher's embedding of the group's pivot query (passage):
`losses.distill_mse`. It pulls every language version of a group to one point, which is the
cross-lingual alignment hybrid batching aims at by other means.

Config (`loss.distill`; absent or weight 0: off):
  weight: the term's weight next to InfoNCE (whose weight is 1).
  only: True -> InfoNCE is left out, the term stands alone (default False).
  teacher: 'initial' (default: the model the run starts from, `config.model`, frozen) or a model
    config dict (`models.load_encoder`); its embedding size must equal the student's.
  pivot: the language whose version is the target (default 'en'). Every group of every source
    must have it (it may lie outside the source's training `langs`: the student then never
    trains on pivot texts, the teacher only reads them).

The teacher is frozen, so its embeddings are computed once per (teacher, store) and kept beside
the store as `<store>.teacher-<digest>.npy` ([groups, 2, D] float32: query, passage), keyed by
the teacher's config, the pivot and the store's content digest; a second run, or a resumed one,
reads them and never loads the teacher. Related: `losses.distill_mse` (the term),
`train_step.make_loss_and_grads` (where it joins InfoNCE), hybrid_ir.lsar (training-free
alignment).
"""
import hashlib
import io
import json
import os
from typing import Any, Callable, Mapping

from absl import logging
from etils import epath
import numpy as np

BATCH_FIELDS = ("teacher_query", "teacher_passage")


def settings(config) -> dict[str, Any] | None:
  """The run's distillation settings with their defaults, or None when the term is off."""
  d = dict(config.loss.get("distill") or {})
  if not float(d.get("weight", 0.0)):
    if d.get("only"):
      raise ValueError("config.loss.distill.only=True needs a weight > 0 (config.loss.distill."
                       "weight): with InfoNCE left out the loss would be zero")
    return None
  unknown = set(d) - {"weight", "only", "teacher", "pivot"}
  if unknown:
    raise ValueError(f"config.loss.distill: unknown keys {sorted(unknown)}; valid: weight, only, "
                     "teacher, pivot")
  teacher = d.get("teacher", "initial")
  if hasattr(teacher, "to_dict"):  # a ConfigDict
    teacher = teacher.to_dict()
  if teacher != "initial" and not isinstance(teacher, Mapping):
    raise ValueError(f"config.loss.distill.teacher={teacher!r}: 'initial' or a model config dict")
  return {"weight": float(d["weight"]), "only": bool(d.get("only", False)),
          "teacher": "initial" if teacher == "initial" else dict(teacher),
          "pivot": str(d.get("pivot", "en"))}


def teacher_model_config(config, s: Mapping[str, Any]) -> dict[str, Any]:
  """The teacher's model config: the run's own model for 'initial'."""
  if s["teacher"] == "initial":
    return config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
  return s["teacher"]


def pivot_rows(source, pivot: str) -> tuple[np.ndarray, np.ndarray]:
  """(query rows, passage rows) of every group's pivot version in `source`'s store; an error
  naming the source, the pivot and the first groups without one."""
  store = source.store
  if pivot not in store.langs:
    raise ValueError(f"config.loss.distill.pivot={pivot!r}: source {source.name!r} has no "
                     f"{pivot!r} texts (it has {list(store.langs)}); name another pivot")
  index = store.index(pivot)
  q, p = np.asarray(index.group_query), np.asarray(index.group_positive)
  missing = np.flatnonzero((q < 0) | (p < 0))
  if len(missing):
    raise ValueError(
        f"config.loss.distill.pivot={pivot!r}: {len(missing)} of {store.num_groups} groups of "
        f"source {source.name!r} have no {pivot!r} version (e.g. group ids "
        f"{store.group_ids(missing[:3])}); name a pivot every group has")
  return q, p


def cache_path(source, teacher: Mapping[str, Any], pivot: str) -> epath.Path:
  key = hashlib.sha256(json.dumps([teacher, pivot, source.store.content_digest],
                                  sort_keys=True).encode()).hexdigest()[:16]
  directory = epath.Path(source.store.directory)
  return directory.parent / f"{directory.name}.teacher-{key}.npy"


def _load(path: epath.Path) -> np.ndarray:
  with path.open("rb") as f:
    return np.load(io.BytesIO(f.read()))


def _save_atomic(path: epath.Path, array: np.ndarray) -> None:
  buf = io.BytesIO()
  np.save(buf, array)
  tmp = path.parent / f"{path.name}.{os.getpid()}.tmp"  # two runs may fill one cache at once
  tmp.write_bytes(buf.getvalue())
  tmp.rename(path)  # a crash leaves no half-written cache under the final name


def teacher_targets(config, sources: Mapping[str, Any], load_teacher: Callable[[dict], Any],
                    student_dim: int, say: Callable[[str], None] = logging.info) -> np.ndarray:
  """[all groups, 2, D] float32: the teacher's embedding of each group's pivot query and
  passage, the rows of each source at its `offset` (the pipeline's example ids index it).

  Inputs: the run's config; the pipeline's sources (`sampler.Source`: store, offset);
  `load_teacher(model_config) -> encoder` (called only on a cache miss; the encoder's
  `encode(params, texts, kind)` embeds); the student's embedding size, checked against the
  teacher's. Cached beside each store (see the module docstring).
  """
  s = settings(config)
  teacher_cfg = teacher_model_config(config, s)
  teacher = None
  total = max(src.offset + src.store.num_groups for src in sources.values())
  out = None
  for src in sources.values():
    q_rows, p_rows = pivot_rows(src, s["pivot"])
    path = cache_path(src, teacher_cfg, s["pivot"])
    if path.exists():
      emb = _load(path)
      say(f"distillation: the teacher's {s['pivot']} embeddings of {src.name!r} from {path}")
    else:
      if teacher is None:
        teacher = load_teacher(teacher_cfg)
      say(f"distillation: embedding {len(q_rows)} {s['pivot']} groups of {src.name!r} with the "
          f"teacher ({teacher.name}) once; kept in {path}")
      emb = np.stack([
          teacher.encode(teacher.params, src.store.texts(s["pivot"], q_rows), "query",
                         progress=False),
          teacher.encode(teacher.params, src.store.texts(s["pivot"], p_rows), "passage",
                         progress=False)], axis=1).astype(np.float32)
      _save_atomic(path, emb)
    if emb.shape[-1] != student_dim:
      raise ValueError(f"config.loss.distill.teacher embeds to {emb.shape[-1]} dimensions, the "
                       f"student ({config.model.get('name')}) to {student_dim}: they must be "
                       "equal")
    if emb.shape[:2] != (src.store.num_groups, 2):
      raise ValueError(f"{path}: shape {emb.shape}, expected ({src.store.num_groups}, 2, D); "
                       "delete this cache file so that it is computed again")
    if out is None:
      out = np.zeros((total, 2, emb.shape[-1]), np.float32)
    out[src.offset:src.offset + src.store.num_groups] = emb
  return out


def attach(batch: dict, targets: np.ndarray | None) -> dict:
  """The host batch with the teacher's targets of its rows (`BATCH_FIELDS`, [L, D] each);
  as is when distillation is off."""
  if targets is None:
    return batch
  rows = targets[np.asarray(batch["group"], np.int64)]
  return dict(batch, teacher_query=rows[:, 0], teacher_passage=rows[:, 1])
