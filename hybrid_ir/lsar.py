"""Language-subspace removal (LSAR; Xie et al., arXiv 2401.05792): the low-rank subspace in which
languages differ, estimated from per-language mean embeddings and projected out of every
embedding, with no training.

The math (`subspace`, `remove`): M [L, d] holds the mean embedding of each of L languages; its
rows are centred (the mean over languages subtracted); the basis U [d, r] is the top-r right
singular vectors of the centred M. An embedding e becomes e - (e U) U^T, then is L2-normalised
again (the encoder is cosine). The centred M has rank at most L - 1, so r < L. The paper's
Algorithm 1 then moves the centre to the point of the languages' affine span nearest the origin
and takes the SVD again: that changes the coordinates, not the span of U, so the projection is
the same (tests/test_lsar.py checks it).

The config, `model.lsar` (LSAR off unless rank > 0):
  rank                  r, the directions removed; 0 = off. Must be below the number of languages.
  source                the `name` of one of config.input.sources: the subspace is estimated
                        from that training source's own texts, in the languages it trains on,
                        never from an evaluation set.
  max_texts_per_lang    texts encoded per language: its queries and its passages (each text
                        once), half and half where both have that many, evenly spaced over the
                        groups; all of them where there are fewer.

Where it is applied: inside the encoder's jitted function (`Encoder.apply(params, batch, basis)`),
one [B, d] x [d, r] product and its transpose before the normalisation. hybrid_ir.eval and
hybrid_ir.search pass `Projected(params, basis)` as the weights to `predict_fn(encoder)`, so that
embedding caches, keyed by the weights' fingerprint, keep LSAR and plain embeddings apart;
hybrid_ir.export writes it as a sentence-transformers Dense layer (weight I - U U^T, no bias,
identity activation) before Normalize.

Where it is kept: `estimate` writes `<directory>/<tag>-<key>.npz` (tag: step_<N> | pretrained;
directory: `default_dir(workdir)`, i.e. <workdir>/lsar, or cache/lsar without a workdir), key =
sha256 of (the model's encoding settings, the params' fingerprint, the lsar settings, the source
store's content digest, its languages): each checkpoint, setting and source gets its own file,
estimated once and read by every binary after. It holds the basis, the singular values, the
per-language means and counts, and the key.

Recommended for: a training-free cross-lingual baseline, or on top of a fine-tuned checkpoint.
Related: hybrid_ir.models.encoder.Encoder (applies it), hybrid_ir.data.store (the texts).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

KEYS = ("rank", "source", "max_texts_per_lang")
DEFAULTS = dict(rank=0, source="", max_texts_per_lang=1000)  # the configs' model.lsar: off
FORMAT = "hybrid_ir.lsar"


@dataclasses.dataclass(frozen=True)
class Settings:
  """A checked `model.lsar` (see the module docstring)."""
  rank: int
  source: str
  max_texts_per_lang: int


def settings(model_config: Mapping[str, Any] | None) -> Settings | None:
  """`model_config.lsar` checked, or None when it is absent or its rank is 0 (off).

  Raises ValueError naming the key for an unknown key or a bad value.
  """
  lsar = (model_config or {}).get("lsar")
  if lsar is None:
    return None
  lsar = dict(lsar)
  unknown = sorted(set(lsar) - set(KEYS))
  if unknown:
    raise ValueError(f"model.lsar: unknown key(s) {unknown}; valid: {list(KEYS)}")
  merged = {**DEFAULTS, **lsar}
  rank, source, n = merged["rank"], merged["source"], merged["max_texts_per_lang"]
  if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
    raise ValueError(f"model.lsar.rank={rank!r}: must be an integer >= 0 (0: off)")
  if rank == 0:
    return None
  if not source or not isinstance(source, str):
    raise ValueError(f"model.lsar.rank={rank} needs model.lsar.source, the name of the training "
                     "source (config.input.sources) that estimates the subspace")
  if isinstance(n, bool) or not isinstance(n, int) or n < 2:
    raise ValueError(f"model.lsar.max_texts_per_lang={n!r}: must be an integer >= 2")
  return Settings(rank, source, n)


def check(config) -> Settings | None:
  """`settings(config.model)`, and its source found among config.input.sources: for a binary,
  before it loads a model. Raises ValueError naming the source and the known ones."""
  s = settings(config.model)
  if s is not None:
    source_config(config, s)
  return s


def source_config(config, s: Settings) -> Mapping[str, Any]:
  """The config of the source named by `s.source` (ValueError naming the known ones)."""
  inp = config.get("input") or {}
  sources = list(inp.get("sources") or [])
  for cfg in sources:
    if cfg.get("name") == s.source:
      return cfg
  known = [c.get("name") for c in sources]
  raise ValueError(f"model.lsar.source={s.source!r} is not a training source of this config; "
                   f"known: {known if known else '(none: the config has no input.sources)'}")


def encoding_settings(model_config) -> dict[str, Any]:
  """The model config without `lsar`: what names an encoding in embedding caches, next to the
  weights' fingerprint (which, for `Projected` weights, covers the LSAR basis)."""
  d = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  d.pop("lsar", None)
  return d


def default_dir(workdir: str | os.PathLike | None) -> pathlib.Path:
  """Where the binaries keep the estimated subspaces: <workdir>/lsar, else cache/lsar."""
  return pathlib.Path(workdir, "lsar") if workdir else pathlib.Path("cache", "lsar")


# ------------------------------------------------------------------------------------------------
# The math.
# ------------------------------------------------------------------------------------------------

def check_rank(rank: int, langs: Sequence[str], source: str = "") -> None:
  """Raises ValueError unless 1 <= rank < len(langs): L centred means span at most L - 1
  directions."""
  if not 1 <= rank < len(langs):
    of = f"of source {source!r} " if source else ""
    raise ValueError(f"model.lsar.rank={rank}: must be from 1 to the number of languages {of}"
                     f"minus one ({len(langs)} languages: {', '.join(langs)}); L centred language "
                     f"means span at most L - 1 = {len(langs) - 1} directions")


def subspace(means: np.ndarray, rank: int, langs: Sequence[str], source: str = ""
             ) -> tuple[np.ndarray, np.ndarray]:
  """(basis U [d, rank] with orthonormal columns, all singular values) of the centred
  per-language means `means` [L, d] (row i: language langs[i])."""
  means = np.asarray(means, np.float64)
  if means.ndim != 2 or means.shape[0] != len(langs):
    raise ValueError(f"lsar.subspace: means of shape {means.shape} for {len(langs)} languages")
  check_rank(rank, langs, source)
  centred = means - means.mean(0, keepdims=True)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  return np.ascontiguousarray(vt[:rank].T, np.float32), s.astype(np.float32)


def remove(x, basis):
  """x [..., d] without its component in span(basis [d, r]): x - (x U) U^T. numpy or jax arrays
  (the encoder calls it inside jit); not normalised."""
  return x - (x @ basis) @ basis.T


# ------------------------------------------------------------------------------------------------
# The weights eval and search encode with.
# ------------------------------------------------------------------------------------------------

class Projected(NamedTuple):
  """Encoder params with an LSAR basis: what eval and search pass as the weights to
  `predict_fn`. A pytree, so the embedding caches' fingerprint covers the basis too."""
  params: Any
  basis: np.ndarray


def predict_fn(encoder, batch_size: int, progress: bool = True) -> Callable:
  """(weights, texts, kind) -> [N, d] L2-normalised: `encoder.encode`, with LSAR inside the
  encoder's jitted function when `weights` is `Projected`, plain when it is params."""
  def predict(weights, texts, kind):
    if isinstance(weights, Projected):
      return encoder.encode(weights.params, texts, kind, batch_size=batch_size,
                            progress=progress, basis=weights.basis)
    return encoder.encode(weights, texts, kind, batch_size=batch_size, progress=progress)
  return predict


# ------------------------------------------------------------------------------------------------
# Estimation from a training source.
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Subspace:
  """An estimated subspace: basis [d, r], singular_values [L], means [L, d], langs, counts
  (texts per language), settings, key, path (its .npz) and loaded (read, not estimated now)."""
  basis: np.ndarray
  singular_values: np.ndarray
  means: np.ndarray
  langs: tuple[str, ...]
  counts: tuple[int, ...]
  settings: Settings
  key: str
  path: pathlib.Path
  loaded: bool

  def summary(self) -> str:
    how = "read from" if self.loaded else "estimated, saved to"
    return (f"lsar: rank {self.settings.rank} language subspace of source "
            f"{self.settings.source!r} ({len(self.langs)} languages: {', '.join(self.langs)}; "
            f"{sum(self.counts)} texts) {how} {self.path}")


def _evenly(n: int, k: int) -> np.ndarray:
  """k of range(n), evenly spaced (all when k >= n)."""
  if k >= n:
    return np.arange(n)
  return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def texts_by_language(store, langs: Sequence[str], max_texts: int
                      ) -> dict[str, tuple[list[str], list[str]]]:
  """{lang: (queries, passages)} of a store: each language's distinct query and positive texts
  (rows), at most `max_texts` of them in all, half each where both have that many."""
  out = {}
  for lang in langs:
    idx = store.index(lang)
    q = np.unique(np.asarray(idx.group_query)[np.asarray(idx.group_query) >= 0])
    p = np.unique(np.asarray(idx.group_positive)[np.asarray(idx.group_positive) >= 0])
    nq = min(len(q), max(max_texts - len(p), max_texts // 2))
    np_ = min(len(p), max_texts - nq)
    out[lang] = (store.texts(lang, q[_evenly(len(q), nq)]),
                 store.texts(lang, p[_evenly(len(p), np_)]))
  return out


def language_means(predict: Callable[[list[str], str], np.ndarray],
                   texts: Mapping[str, tuple[list[str], list[str]]]
                   ) -> tuple[np.ndarray, tuple[int, ...]]:
  """(means [L, d] of each language's embeddings, texts per language); predict(texts, kind)."""
  means, counts = [], []
  for lang, (queries, passages) in texts.items():
    parts = [np.asarray(predict(t, kind), np.float64)
             for t, kind in ((queries, "query"), (passages, "passage")) if t]
    if not parts:
      raise ValueError(f"lsar: language {lang!r} has no texts to estimate its mean from")
    emb = np.concatenate(parts)
    means.append(emb.mean(0))
    counts.append(len(emb))
  return np.stack(means), tuple(counts)


def _source_langs(config, cfg, store) -> tuple[str, ...]:
  from hybrid_ir import sampler  # pylint: disable=g-import-not-at-top
  return sampler.make_source(cfg.get("name"), store, cfg, 0,
                             (config.get("input") or {}).get("languages")).langs


def estimate(config, encoder, params, *, directory: str | os.PathLike, tag: str,
             batch_size: int | None = None) -> Subspace | None:
  """The LSAR subspace of `params` under config.model.lsar (None when off): read from
  `<directory>/<tag>-<key>.npz` if it was estimated before, else estimated from the source's
  texts and saved there (atomically). Raises ValueError for an unknown source or a rank not
  below the source's number of languages (before encoding anything)."""
  s = check(config)
  if s is None:
    return None
  from hybrid_ir import data  # pylint: disable=g-import-not-at-top
  from hybrid_ir.evaluators import embedding_cache  # pylint: disable=g-import-not-at-top
  cfg = source_config(config, s)
  inp = config.get("input") or {}
  store = data.open_store(cfg, inp.get("store_dir"), prepare=inp.get("prepare", "auto"))
  langs = _source_langs(config, cfg, store)
  check_rank(s.rank, langs, s.source)
  ident = {"format": FORMAT, "encoding": encoding_settings(config.model),
           "params_sha256": embedding_cache.params_fingerprint(params),
           "settings": dataclasses.asdict(s), "source_content": store.content_digest,
           "langs": list(langs)}
  key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
  path = pathlib.Path(directory) / f"{tag}-{key[:16]}.npz"
  if path.is_file():
    return _load(path, key, s)
  texts = texts_by_language(store, langs, s.max_texts_per_lang)
  batch = batch_size or config.get("eval_batch_size", 64)
  means, counts = language_means(
      lambda t, kind: encoder.encode(params, t, kind, batch_size=batch, progress=False), texts)
  basis, sv = subspace(means, s.rank, langs, s.source)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
  np.savez(tmp, basis=basis, singular_values=sv, means=means.astype(np.float32),
           langs=np.asarray(langs), counts=np.asarray(counts), key=np.asarray(key),
           ident=np.asarray(json.dumps(ident, sort_keys=True, default=str)))
  os.replace(tmp, path)
  logging.info("lsar: estimated %s (singular values %s)", path, sv)
  return Subspace(basis, sv, means.astype(np.float32), tuple(langs), counts, s, key, path, False)


def _load(path: pathlib.Path, key: str, s: Settings) -> Subspace:
  try:
    with np.load(path) as z:
      got = str(z["key"])
      sub = Subspace(np.asarray(z["basis"], np.float32), np.asarray(z["singular_values"]),
                     np.asarray(z["means"]), tuple(str(l) for l in z["langs"]),
                     tuple(int(c) for c in z["counts"]), s, got, path, True)
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"lsar: {path} cannot be read ({e}); remove it to estimate the subspace "
                     "again") from None
  if got != key or sub.basis.shape[1] != s.rank:
    raise ValueError(f"lsar: {path} holds another subspace (key {got[:16]}, rank "
                     f"{sub.basis.shape[1]}; wanted {key[:16]}, rank {s.rank}); remove it to "
                     "estimate the subspace again")
  return sub
