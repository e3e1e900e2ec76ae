r"""Hard-negative mining: a model's nearest wrong passages become a training source's negatives.

  python -m hybrid_ir.mine --config configs/recipe.py --pretrained            # the model as loaded
  python -m hybrid_ir.mine --config configs/recipe.py --workdir W [--step N]  # a checkpoint
      [--num_negatives 8 --range_min 0 --range_max 40 --absolute_margin 0.05 --max_score 0.95
       --cross_lingual --out DIR --overwrite]

For every training source of the config (`--sources` picks some) and every language L it trains
on, each group's query is scored against every passage of L (the group positives and negatives
of L's index) with the exact top-k search `hybrid_ir.search` uses (`retrieval.top_k`). From the
ranked list it drops the group's positive and every passage of the same passage identity (its
translations, equal texts, the answers of groups that share its query: `hybrid_ir.data.store`),
then keeps candidates as sentence-transformers' `util.mine_hard_negatives` does, with the same
meanings:
  absolute_margin  drop a candidate whose score + margin > the positive's score
  relative_margin  drop a candidate whose score > positive - |positive| * margin
  max_score        drop a candidate whose score > max_score
  range_min / range_max   of what is left, ranks [range_min, range_max) (0-based) are kept, and
                   the first --num_negatives of them are the group's negatives in L.
range_max defaults to range_min + num_negatives, or range_min + 10 * num_negatives when a margin
or max_score is set. The search retrieves range_max + (the largest passage identity in L)
candidates, so the exclusions never shorten the window.

--cross_lingual: the group's negatives in L are mined with its queries in every trained language
X, not only with its query in L, and merged round-robin (L's first, then each X's in language
order), without repeats: the passages of L that an X-L example confuses with its answer. The
negatives of a group in L are always passages of L: the store keeps them per language, and the
input pipeline reads a negative in the example's passage language, or, with the source's
`negative_langs: 'query+passage'`, half of an X->L example's negatives in X.

Output: per source, a store (`hybrid_ir.data.store`, same format and integrity checks) whose
texts are hard links to the source store's texts (no copies; a copy only where a link cannot be
made, e.g. across file systems, logged), whose indexes are the source's with the negatives
replaced (languages not mined keep none), and a `mined.json` (also checksummed) naming the
source store, the model, the checkpoint and the settings. It goes to
`<input.store_dir>/mined/<name>-<key>` (or `--out DIR/<name>-<key>`), key = sha256 of (the
source store's bytes, the model's parameters, the settings). Train on it by setting the
source's `store` to that folder and its `num_negatives` (docs/own_data.md shows a config).

Audit: a squad-kind source read from an `xquad-r` or `mlqa-r` folder is checked with the
evaluator's own relevance rule, which knows nothing of identities (`lareqa_false_negatives`):
its summary line gives the false negatives found (0 expected). `--summary FILE` writes the
summaries to a JSON file as well.

Resumable: each language's negatives are written atomically to `<store>.parts/<lang>.npz` and
skipped when present, and a source whose mined store exists is skipped; the store is assembled
when every language is done. Progress: one bar over the texts to encode.

Related: `hybrid_ir.search` (the same exact search on your corpus), `hybrid_ir.retrieval.top_k`,
`hybrid_ir.data.store` (identities), `hybrid_ir.input_pipeline` (reads `num_negatives`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import time
import typing
from typing import Any, Callable, Sequence

from absl import flags
from absl import logging
from etils import epath
import numpy as np

from hybrid_ir import config_flags

MINED = "mined.json"  # in a mined store: what it was mined from, with what
PARTS = ".parts"  # suffix of the folder of finished languages


@dataclasses.dataclass(frozen=True)
class Settings:
  """What is kept (see the module docstring; sentence-transformers' names and meanings)."""
  num_negatives: int = 8
  range_min: int = 0
  range_max: int | None = None
  max_score: float | None = None
  absolute_margin: float | None = None
  relative_margin: float | None = None
  cross_lingual: bool = False

  def window_end(self) -> int:
    if self.range_max is not None:
      return self.range_max
    filtered = (self.max_score, self.absolute_margin, self.relative_margin) != (None,) * 3
    return self.range_min + self.num_negatives * (10 if filtered else 1)

  def check(self) -> None:
    if self.num_negatives < 1:
      raise ValueError(f"--num_negatives must be >= 1, got {self.num_negatives}")
    if self.range_min < 0:
      raise ValueError(f"--range_min must be >= 0, got {self.range_min}")
    if self.window_end() - self.range_min < self.num_negatives:
      raise ValueError(f"--range_min {self.range_min} and --range_max {self.window_end()} leave "
                       f"{self.window_end() - self.range_min} ranks for --num_negatives "
                       f"{self.num_negatives}: raise --range_max")
    for name in ("absolute_margin", "relative_margin"):
      if getattr(self, name) is not None and getattr(self, name) < 0:
        raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")


def select(scores: np.ndarray, cands: np.ndarray, excluded: np.ndarray, positive: np.ndarray,
           settings: Settings) -> tuple[np.ndarray, dict[str, int]]:
  """The kept candidates of each query, from its ranked list.

  Inputs: scores [Nq, K] and cands [Nq, K] (pool indices, -1 past the pool), best first, as
  `retrieval.top_k` returns them; excluded [Nq, K] bool (same passage identity as the query's
  positive); positive [Nq] the positive's score; the settings.
  Returns (kept [Nq, num_negatives] pool indices, -1 where fewer were left; counts of the
  candidates each rule dropped).
  """
  keep = (cands >= 0) & ~excluded
  counts = {"same identity": int(((cands >= 0) & excluded).sum())}
  rules = []
  if settings.absolute_margin is not None:
    rules.append(("absolute_margin", scores + settings.absolute_margin > positive[:, None]))
  if settings.relative_margin is not None:
    rules.append(("relative_margin",
                  scores > (positive - np.abs(positive) * settings.relative_margin)[:, None]))
  if settings.max_score is not None:
    rules.append(("max_score", scores > settings.max_score))
  for name, drop in rules:
    counts[name] = int((keep & drop).sum())
    keep &= ~drop
  rank = np.cumsum(keep, axis=1) - 1  # rank among what is left
  keep &= (rank >= settings.range_min) & (rank < settings.window_end())
  out = np.full((len(cands), settings.num_negatives), -1, np.int64)
  for i, row in enumerate(keep):
    kept = cands[i][row][:settings.num_negatives]
    out[i, :len(kept)] = kept
  return out, counts


def merge_round_robin(lists: Sequence[np.ndarray], n: int) -> list[int]:
  """The first n distinct items taking one from each list in turn (-1 entries skipped)."""
  out, seen = [], set()
  for column in range(max((len(l) for l in lists), default=0)):
    for l in lists:
      if column < len(l) and l[column] >= 0 and int(l[column]) not in seen:
        seen.add(int(l[column]))
        out.append(int(l[column]))
        if len(out) == n:
          return out
  return out


class Embedder:
  """Embeds store texts with one model and params, with one progress bar over all texts, and
  holds each language's query embeddings for reuse (--cross_lingual reads them per language)."""

  def __init__(self, predict_fn: Callable[[list[str], str], np.ndarray], total: int):
    import tqdm  # pylint: disable=g-import-not-at-top
    self.predict_fn = predict_fn
    self.bar = tqdm.tqdm(total=total, desc="mine: encode", unit="text", dynamic_ncols=True)
    self.queries: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  def __call__(self, texts: list[str], kind: str, chunk: int = 1024) -> np.ndarray:
    out = []
    for i in range(0, len(texts), chunk):
      out.append(np.asarray(self.predict_fn(texts[i:i + chunk], kind), np.float32))
      self.bar.update(len(texts[i:i + chunk]))
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

  def query_embeddings(self, store, lang: str) -> tuple[np.ndarray, np.ndarray]:
    """(groups with a query in `lang`, their query embeddings)."""
    if lang not in self.queries:
      rows = np.asarray(store.index(lang).group_query)
      groups = np.flatnonzero(rows >= 0)
      self.queries[lang] = groups, self(store.texts(lang, rows[groups]), "query")
    return self.queries[lang]


def passage_pool(store, lang: str) -> np.ndarray:
  """The passage rows of `lang`, sorted: every group's positive and every listed negative."""
  idx = store.index(lang)
  pos = np.asarray(idx.group_positive)
  return np.unique(np.concatenate([pos[pos >= 0], np.asarray(idx.negative_rows)])).astype(
      np.int64)


def mine_language(store, lang: str, query_langs: Sequence[str], encode: Embedder,
                  settings: Settings, block: tuple[int, int] = (256, 8192)
                  ) -> tuple[list[list[int]], dict[str, Any]]:
  """The mined negatives of every group in `lang` (rows of `lang`; [] where none), and counts.

  query_langs: the languages whose queries mine `lang` (`lang` first; others with
  --cross_lingual).
  """
  from hybrid_ir import retrieval  # pylint: disable=g-import-not-at-top  (jax)
  idx = store.index(lang)
  pool = passage_pool(store, lang)
  if not len(pool):
    return [[] for _ in range(store.num_groups)], {"queries": 0, "pool": 0, "groups": 0,
                                                   "negatives": 0}
  pool_identity = np.asarray(idx.row_identity)[pool]
  cand_emb = encode(store.texts(lang, pool), "passage")
  positive_row = np.asarray(idx.group_positive)
  group_identity = np.asarray(store.group_identity)
  _, per_identity = np.unique(pool_identity, return_counts=True)
  k = int(min(len(pool), settings.window_end() + per_identity.max()))
  fit = lambda n, b: min(b, max(8, 1 << (max(n, 1) - 1).bit_length()))  # noqa: E731
  per_lang, counts = [], {"queries": 0, "pool": len(pool)}
  for x in query_langs:
    groups, q_emb = encode.query_embeddings(store, x)
    groups_l = positive_row[groups] >= 0
    groups, q_emb = groups[groups_l], q_emb[groups_l]
    scores, cands = retrieval.top_k(q_emb, cand_emb, k, query_block=fit(len(groups), block[0]),
                                    cand_block=fit(len(pool), block[1]))
    cands = cands.astype(np.int64)
    pos_at = np.searchsorted(pool, positive_row[groups])
    positive = np.einsum("nd,nd->n", q_emb, cand_emb[pos_at])
    excluded = (pool_identity[np.maximum(cands, 0)] == group_identity[groups][:, None]) | (
        cands == pos_at[:, None])
    kept, dropped = select(scores, cands, excluded, positive, settings)
    per_lang.append((groups, kept))
    counts["queries"] += len(groups)
    for name, n in dropped.items():
      counts[f"dropped: {name}"] = counts.get(f"dropped: {name}", 0) + n
  lists: dict[int, list[np.ndarray]] = {}
  for groups, kept in per_lang:
    for g, row in zip(groups.tolist(), kept):
      lists.setdefault(g, []).append(row)
  out = [[] for _ in range(store.num_groups)]
  for g, rows in lists.items():
    out[g] = [int(pool[i]) for i in merge_round_robin(rows, settings.num_negatives)]
  counts["groups"] = len(lists)
  counts["negatives"] = sum(len(x) for x in out)
  counts["groups short of negatives"] = sum(len(out[g]) < settings.num_negatives for g in lists)
  return out, counts


# ------------------------------------------------------------------------------------------------
# Per-language parts (resume) and the mined store.
# ------------------------------------------------------------------------------------------------

def _save_part(path: epath.Path, negatives: list[list[int]], counts: dict, key: str) -> None:
  from hybrid_ir.data import store as store_lib  # pylint: disable=g-import-not-at-top
  offsets, rows = store_lib.csr(negatives)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = epath.Path(f"{path}.tmp-{os.getpid()}")
  with tmp.open("wb") as f:
    np.savez(f, offsets=offsets, rows=rows, key=np.array(key), counts=np.array(json.dumps(counts)))
  tmp.rename(path)


def _load_part(path: epath.Path, key: str) -> tuple[np.ndarray, np.ndarray, dict] | None:
  if not path.exists():
    return None
  with path.open("rb") as f:
    z = np.load(f)
    if str(z["key"]) != key:
      raise ValueError(f"{path} was mined with other settings, model or store (key "
                       f"{str(z['key'])[:16]}, not {key[:16]}); remove it or choose another --out")
    return z["offsets"], z["rows"], json.loads(str(z["counts"]))


def _link_or_copy(src: epath.Path, dst: epath.Path) -> bool:
  """Hard-links src to dst (no copy); copies where a link cannot be made. True when linked."""
  if "://" not in str(src) and "://" not in str(dst):
    try:
      os.link(src, dst)
      return True
    except OSError as e:
      logging.warning("%s: cannot hard-link (%s); copying it", src, e)
  src.copy(dst)
  return False


def write_mined_store(base, directory: epath.Path, parts: dict[str, tuple], info: dict,
                      overwrite: bool = False):
  """Writes the store `base` with the mined negatives of `parts` ({index language: (offsets,
  rows, counts)}) at `directory`, through `store.Builder` (atomic, checksummed); other index
  languages get no negatives. Returns the opened store."""
  from hybrid_ir.data import store as store_lib  # pylint: disable=g-import-not-at-top
  builder = store_lib.Builder(directory, kind=base.meta["kind"], name=base.name,
                              settings=base.meta["settings"], inputs=base.meta["inputs"],
                              overwrite=overwrite)
  try:
    linked = [_link_or_copy(p, builder.tmp / "texts" / p.name)
              for p in sorted((base.directory / "texts").glob("*"))]
    index_langs = [store_lib.ALL] if base.aligned else list(base.langs)
    empty = (np.zeros(base.num_groups + 1, np.int64), np.zeros(0, np.int32))
    for l in index_langs:
      idx = base.index(base.langs[0] if l == store_lib.ALL else l)
      offsets, rows = parts[l][:2] if l in parts else empty
      builder.save_index(l, store_lib.LangIndex(
          group_query=np.asarray(idx.group_query), group_positive=np.asarray(idx.group_positive),
          negative_offsets=offsets, negative_rows=rows, row_identity=np.asarray(idx.row_identity)))
    info = dict(info, texts_linked=sum(linked), texts_copied=len(linked) - sum(linked))
    (builder.tmp / MINED).write_text(json.dumps(info, indent=1, sort_keys=True))
    counts = dict(base.meta.get("counts") or {})
    counts["mined negatives"] = {l: int(len(parts[l][1])) for l in parts}
    return builder.finish(langs=base.langs, aligned=base.aligned,
                          group_ids=base.group_ids(range(base.num_groups)),
                          group_identity=np.asarray(base.group_identity), mono=base.mono,
                          counts=counts)
  except BaseException:
    builder.abort()
    raise


def mining_key(base, params_sha256: str, settings: Settings, langs: Sequence[str]) -> str:
  return hashlib.sha256(json.dumps(
      [base.content_digest, params_sha256, dataclasses.asdict(settings), list(langs)],
      sort_keys=True).encode()).hexdigest()


def mine_source(base, langs: Sequence[str], encode: Embedder, settings: Settings,
                directory: epath.Path, key: str, info: dict, overwrite: bool = False):
  """Mines `langs` of store `base` (resuming from `<directory>.parts/`) and writes the mined
  store at `directory`. Returns (store, counts per index language)."""
  from hybrid_ir.data import store as store_lib  # pylint: disable=g-import-not-at-top
  parts_dir = epath.Path(f"{directory}{PARTS}")
  # An aligned store (mMARCO) keeps one index for all languages: its rows are the same passage
  # ids in every language, so the first language's negatives serve all.
  todo = [langs[0]] if base.aligned else list(langs)
  parts, counts = {}, {}
  for lang in todo:
    index_lang = store_lib.ALL if base.aligned else lang
    path = parts_dir / f"{index_lang}.npz"
    done = _load_part(path, key)
    if done is None:
      query_langs = [lang] + ([x for x in langs if x != lang] if settings.cross_lingual else [])
      negatives, c = mine_language(base, lang, query_langs, encode, settings)
      _save_part(path, negatives, c, key)
      done = _load_part(path, key)
    parts[index_lang] = done
    counts[index_lang] = done[2]
  store = write_mined_store(base, directory, parts, dict(info, counts=counts), overwrite)
  shutil.rmtree(str(parts_dir), ignore_errors=True)  # the store holds all of it now
  return store, counts


def lareqa_false_negatives(store, data_dir: str | os.PathLike, dataset: str) -> dict[str, Any]:
  """Audits a mined store of XQuAD-R or MLQA-R with the evaluator's relevance rule, which knows
  nothing of passage identities: a negative of group g in language L is a false negative when
  its text (normalised) is the answer sentence of g's question id in L (`data.lareqa`).
  Returns {'negatives', 'false_negatives', 'rate', 'by_lang': {lang: false negatives}}."""
  from hybrid_ir.data import lareqa  # pylint: disable=g-import-not-at-top
  from hybrid_ir.data import store as store_lib  # pylint: disable=g-import-not-at-top
  ev = lareqa.load_lareqa(data_dir, dataset)
  row_of_id = {}
  for row, qid in enumerate(ev.question_ids):
    row_of_id.setdefault(qid, row)
  relevant = np.stack([ev.relevant_by_lang[row_of_id[q]]
                       for q in store.group_ids(range(store.num_groups))])  # [G, L] (-1: none)
  total, by_lang = 0, {}
  for lang in store.langs:
    idx = store.index(lang)
    offsets, rows = np.asarray(idx.negative_offsets), np.asarray(idx.negative_rows)
    texts = [store_lib.normalize_text(t) for t in store.texts(lang, rows)]
    answer = relevant[:, ev.langs.index(lang)]
    by_lang[lang] = sum(
        texts[j] == store_lib.normalize_text(ev.cand_sentence[answer[g]])
        for g in range(store.num_groups) if answer[g] >= 0
        for j in range(int(offsets[g]), int(offsets[g + 1])))
    total += len(rows)
  false = sum(by_lang.values())
  return {"dataset": dataset, "negatives": total, "false_negatives": false,
          "rate": false / max(total, 1), "by_lang": by_lang}


# ------------------------------------------------------------------------------------------------
# The binary.
# ------------------------------------------------------------------------------------------------

def run(config, *, workdir: str | None = None, step: int | None = None, pretrained: bool = False,
        out: str | None = None, sources: Sequence[str] = (), settings: Settings = Settings(),
        overwrite: bool = False, batch_size: int | None = None, encoder=None,
        log_file: bool = False, summary: str | None = None) -> list[dict]:
  """What the binary does, callable in-process: mines every chosen source, returns one summary
  per source ({'source', 'store', 'seconds', 'counts', ...}). encoder: an already built encoder
  of `config.model` (tests); default: built here. log_file: the log (backend probe, Orbax,
  store preparation) goes to <out>/mine.INFO from before the model loads (the binary). summary:
  a JSON file for the summaries as well. A squad-kind source read from an xquad-r or mlqa-r
  folder is audited with `lareqa_false_negatives` (its row's 'lareqa_false_negatives')."""
  from hybrid_ir import data  # pylint: disable=g-import-not-at-top
  from hybrid_ir import run_dir  # pylint: disable=g-import-not-at-top
  if pretrained == (workdir is not None):
    raise ValueError("give exactly one of --workdir (a training run's checkpoint) or --pretrained")
  if pretrained and step is not None:
    raise ValueError("--step reads a checkpoint; it cannot go with --pretrained")
  settings.check()
  chosen = _chosen_sources(config, sources)
  root = epath.Path(out) if out else epath.Path(
      config.input.get("store_dir") or data.DEFAULT_STORE_DIR) / "mined"
  with run_dir.HeldLog() as log:
    if log_file:
      root.mkdir(parents=True, exist_ok=True)
      log.to_file("mine", root)
    encoder, params, tag = _model(config, encoder, workdir, step, pretrained)
  from hybrid_ir.evaluators import embedding_cache  # pylint: disable=g-import-not-at-top
  params_sha = embedding_cache.params_fingerprint(params)
  batch = batch_size or config.get("eval_batch_size", 64)
  predict = lambda texts, kind: encoder.encode(params, texts, kind, batch_size=batch,  # noqa: E731
                                               progress=False)
  plans = [_plan(config, cfg, root, params_sha, settings, overwrite) for cfg in chosen]
  encode = Embedder(predict, sum(_texts_to_encode(p, settings) for p in plans))
  out_rows = []
  try:
    for plan in plans:
      t0 = time.time()
      row = _mine_or_reuse(plan, encode, settings, overwrite, run_info={
          "model": config.model.get("name"), "checkpoint": tag,
          "workdir": str(workdir) if workdir else None, "params_sha256": params_sha,
          "settings": dataclasses.asdict(settings)})
      row["seconds"] = round(time.time() - t0, 1)
      lareqa_set = pathlib.Path(str(plan.cfg.get("path") or ""))
      if plan.cfg.get("kind") == "squad" and lareqa_set.name in ("xquad-r", "mlqa-r"):
        # A LAReQA set: audited with the evaluator's own relevance rule.
        row["lareqa_false_negatives"] = lareqa_false_negatives(plan.mined, lareqa_set.parent,
                                                               lareqa_set.name)
      out_rows.append(row)
  finally:
    encode.bar.close()
  _say_results(out_rows, summary, config, tag, settings)
  return out_rows


def _chosen_sources(config, names: Sequence[str]) -> list:
  """The config's training sources that `names` picks (all when empty); unknown names refused."""
  chosen = [c for c in config.input.sources if not names or c.get("name") in names]
  missing = sorted(set(names) - {c.get("name") for c in config.input.sources})
  if missing or not chosen:
    raise ValueError(f"--sources {missing or list(names)}: not in the config's input.sources "
                     f"{[c.get('name') for c in config.input.sources]}")
  return chosen


def _model(config, encoder, workdir, step, pretrained) -> tuple[Any, Any, str]:
  """(encoder, params, tag): the config's model as loaded, or a checkpoint's params."""
  from hybrid_ir import checkpoint, models  # pylint: disable=g-import-not-at-top  (heavy)
  encoder = encoder or models.load_encoder(config.model)
  if pretrained:
    return encoder, encoder.params, "pretrained"
  step = checkpoint.latest_finished_step(workdir) if step is None else step
  return (encoder, checkpoint.restore_params(workdir, step, checkpoint.abstract(encoder.params)),
          f"step_{step}")


@dataclasses.dataclass
class _Plan:
  """One source to mine: its store, languages, mining key, output folder, and the mined store
  when a run already made it (None: to mine)."""
  cfg: Any
  base: Any
  langs: list[str]
  key: str
  directory: epath.Path
  mined: Any


def _plan(config, cfg, root: epath.Path, params_sha: str, settings: Settings,
          overwrite: bool) -> _Plan:
  from hybrid_ir import data  # pylint: disable=g-import-not-at-top
  from hybrid_ir.data import store as store_lib  # pylint: disable=g-import-not-at-top
  base = data.open_store(cfg, config.input.get("store_dir"),
                         prepare=config.input.get("prepare", "auto"))
  only = config.input.get("languages")
  langs = [l for l in (cfg.get("langs") or base.langs)
           if l in base.langs and (not only or l in only)]
  key = mining_key(base, params_sha, settings, langs)
  directory = root / f"{base.name}-{key[:16]}"
  mined = (store_lib.Store(directory) if store_lib.is_store(directory) and not overwrite
           else None)
  return _Plan(cfg, base, langs, key, directory, mined)


def _texts_to_encode(plan: _Plan, settings: Settings) -> int:
  """How many texts mining `plan` still encodes (languages already kept are skipped): the
  progress bar's total."""
  from hybrid_ir.data import store as store_lib  # pylint: disable=g-import-not-at-top
  if plan.mined is not None:
    return 0
  base, parts = plan.base, epath.Path(f"{plan.directory}{PARTS}")
  todo = [l for l in ([plan.langs[0]] if base.aligned else plan.langs)
          if not (parts / f"{store_lib.ALL if base.aligned else l}.npz").exists()]
  queried = plan.langs if settings.cross_lingual and todo and not base.aligned else todo
  return (sum(len(passage_pool(base, l)) for l in todo)
          + sum(int((np.asarray(base.index(l).group_query) >= 0).sum()) for l in queried))


def _mine_or_reuse(plan: _Plan, encode, settings: Settings, overwrite: bool,
                   run_info: dict) -> dict:
  """Mines one source (or reads what a previous run mined; either way `plan.mined` is then its
  store); its summary row. run_info: the model, checkpoint, params and settings it is mined with,
  recorded in the store's mined.json."""
  base = plan.base
  if plan.mined is not None:
    return {"source": base.name, "store": str(plan.directory), "status": "already mined",
            "counts": json.loads((plan.directory / MINED).read_text()).get("counts")}
  info = {"format": "hybrid_ir.mined", "source": base.name, "source_store": str(base.directory),
          "source_content": base.content_digest, **run_info, "langs": list(plan.langs),
          "key": plan.key}
  encode.queries.clear()
  plan.mined, counts = mine_source(base, plan.langs, encode, settings, plan.directory, plan.key,
                                   info, overwrite)
  return {"source": base.name, "store": str(plan.directory), "status": "mined", "counts": counts}


def _say_results(rows: list[dict], summary: str | None, config, tag: str,
                 settings: Settings) -> None:
  for row in rows:
    print(json.dumps(row), flush=True)
  if summary:
    pathlib.Path(summary).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(summary).write_text(json.dumps(
        {"model": config.model.get("name"), "checkpoint": tag,
         "settings": dataclasses.asdict(settings), "sources": rows}, indent=1) + "\n")
  print(f"train on them: set each source's store to its folder above and its num_negatives "
        f"(<= {settings.num_negatives}); docs/own_data.md#hard-negative-mining", flush=True)


_SETTINGS_HELP = {
    "num_negatives": "Negatives kept per group and language.",
    "range_min": "Skip the first range_min candidates left after the exclusions and filters "
                 "(0-based ranks).",
    "range_max": "Keep ranks below range_max (default range_min + num_negatives, x10 with a "
                 "margin or max_score).",
    "max_score": "Drop candidates scoring above this (cosine).",
    "absolute_margin": "Drop candidates with score + margin > the positive's score.",
    "relative_margin": "Drop candidates with score > positive - |positive| * margin.",
    "cross_lingual": "Mine each language's negatives with the group's queries in every trained "
                     "language, not only its own.",
}


def define_flags() -> None:
  config_flags.define_config(help_string="the config whose input.sources are mined, with its "
                             "model.")
  config_flags.define_model_flags("mine")
  flags.DEFINE_string("out", None, "Folder of the mined stores (default "
                      "<input.store_dir>/mined): <out>/<source>-<key>.")
  flags.DEFINE_list("sources", [], "Names of the sources to mine (default: all).")
  # One flag per Settings field, with the field's type and default.
  types = typing.get_type_hints(Settings)
  for field in dataclasses.fields(Settings):
    kind = next(t for t in (bool, int, float) if t in (types[field.name],
                                                       *typing.get_args(types[field.name])))
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}[kind]
    define(field.name, field.default, _SETTINGS_HELP[field.name])
  flags.DEFINE_integer("batch_size", None, "Encoding batch (default: config.eval_batch_size).")
  flags.DEFINE_bool("overwrite", False, "Mine again, replacing a mined store with the same key.")
  flags.DEFINE_string("summary", None, "Also write the printed summaries to this JSON file.")


def main(argv) -> None:
  del argv
  config_flags.require("config")
  f = flags.FLAGS
  settings = Settings(**{field.name: f[field.name].value for field in dataclasses.fields(Settings)})
  run(f.config, workdir=f.workdir, step=f.step, pretrained=f.pretrained, out=f.out,
      sources=f.sources, settings=settings, overwrite=f.overwrite, batch_size=f.batch_size,
      log_file=True, summary=f.summary)


if __name__ == "__main__":
  define_flags()
  config_flags.run(main)
