"""Hard-negative mining (hybrid_ir.mine): the rows mined on a store whose nearest negatives are
known, the exclusion of every passage of the query's identity, sentence-transformers' filters,
the cross-lingual merge, resume, and the mined store read by training through num_negatives.

The known-neighbour store uses an embedder that reads each text's vector from the text itself
("<words> | x y z"), so the expected ranking is computed by hand; the tiny random BERT of
tests/configs_test_train.py then mines through the binary, checked against a brute-force
ranking with the same encoder.
"""
import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir import input_pipeline
from hybrid_ir import mine
from hybrid_ir import sampler as sampler_lib
from hybrid_ir.data import store as store_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


class VectorEmbedder:
  """An encoder whose embedding of "<words> | x y z" is (x, y, z) normalised: known scores."""
  params = {}
  name = "vectors"

  def __init__(self):
    self.seen = []

  def encode(self, params, texts, kind, batch_size=64, progress=True):
    del params, batch_size, progress
    self.seen += [(kind, t) for t in texts]
    v = np.array([[float(x) for x in t.split("|")[1].split()] for t in texts], np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def record(g, lang, query, positive, positive_id=None, negatives=()):
  r = {"group_id": g, "lang": lang, "query": query, "positive": positive,
       "negatives": list(negatives)}
  if positive_id:
    r["positive_id"] = positive_id
  return json.dumps(r)


# Query vectors lie near the x axis; passages at known angles. g1's positive in en is "p1"; "p1b"
# is the same passage in other words (positive_id p1 on g4, which shares it), so it must never be
# mined for g1 although it is g1's nearest candidate. Expected en ranking for g1's query (1,0,0):
#   p1b .995 (same identity: dropped), n_a .98, p2 .90, n_b .80, p3 .60, n_c .10.
EN = [
    record("g1", "en", "q one | 1 0 0", "p1 | 0.97 0.243 0", "p1", negatives=["n_c | 0.1 0.995 0"]),
    record("g2", "en", "q two | 0 1 0", "p2 | 0.9 0.436 0", "p2", negatives=["n_a | 0.98 0 0.199"]),
    record("g3", "en", "q three | 0 0 1", "p3 | 0.6 0 0.8", "p3", negatives=["n_b | 0.8 0.6 0"]),
    record("g4", "en", "q four | 0.7 0.7 0", "p1b | 0.995 0.0998 0", "p1"),
]
# German: the same groups; g1's de positive is the translation of p1 (same identity as p1 and p1b).
DE = [
    record("g1", "de", "f eins | 0 0.6 0.8", "d1 | 0.99 0.141 0", "p1"),
    record("g2", "de", "f zwei | 0 1 0", "d2 | 0.95 0.312 0", "p2"),
    record("g3", "de", "f drei | 0 0 1", "d3 | 0.3 0.954 0", "p3"),
]


@pytest.fixture()
def toy(tmp_path):
  (tmp_path / "en.jsonl").write_text("\n".join(EN) + "\n")
  (tmp_path / "de.jsonl").write_text("\n".join(DE) + "\n")
  cfg = dict(name="toy", kind="jsonl", paths=[str(tmp_path / "en.jsonl"),
                                              str(tmp_path / "de.jsonl")], min_lang_share=0)
  store = data.open_store(cfg, tmp_path / "stores")
  return cfg, store, tmp_path


def texts_of(store, lang, rows):
  return [t.split(" |")[0] for t in store.texts(lang, rows)]


def config_of(cfg, tmp_path):
  cfg = dict(cfg)
  c = ml_collections.ConfigDict()
  c.model = dict(name="vectors")
  c.eval_batch_size = 8
  c.input = dict(store_dir=str(tmp_path / "stores"), prepare="auto", sources=[cfg])
  return c


def mined_negatives(store, lang):
  g = {gid: i for i, gid in enumerate(store.group_ids(range(store.num_groups)))}
  return {gid: texts_of(store, lang, store.negatives(lang, i)) for gid, i in g.items()}


def test_mined_rows_are_the_known_nearest_without_the_same_identity(toy):
  cfg, store, tmp = toy
  rows = mine.run(config_of(cfg, tmp), pretrained=True, encoder=VectorEmbedder(),
                  settings=mine.Settings(num_negatives=3))
  mined = store_lib.Store(rows[0]["store"])
  got = mined_negatives(mined, "en")
  # g1: p1b shares p1's identity (positive_id) and is skipped although it scores highest.
  assert got["g1"] == ["n_a", "p2", "n_b"]
  # g3's query (0,0,1): p3 .8 is its positive; n_a .199 then zeros (ties by pool order).
  assert got["g3"][0] == "n_a"
  for l in ("en", "de"):
    for i in range(mined.num_groups):
      neg = mined.negatives(l, i)
      # en: 7 passages, 3 kept; de: 3 passages, so 2 besides the positive; g4 has no de.
      assert len(neg) == {"en": 3, "de": 2 if i < 3 else 0}[l]
      # No mined passage shares its group's identity: the false-negative rate is 0.
      assert not np.isin(mined.index(l).row_identity[neg], mined.group_identity[i]).any()
  # g1 in de, query (0, .6, .8): d3 .572, d2 .187; d1 is its positive.
  assert mined_negatives(mined, "de")["g1"] == ["d3", "d2"]
  # The mined store is the source's with the negatives replaced: same texts (linked), groups,
  # identities, fingerprint; its own files checked like any store's.
  assert mined.fingerprint == store.fingerprint
  assert mined.verify() > 0
  for l in ("en", "de"):
    assert mined.texts(l, range(3)) == store.texts(l, range(3))
    assert (pathlib.Path(mined.directory) / "texts" / f"{l}.array_record").stat().st_nlink == 2
    np.testing.assert_array_equal(mined.index(l).row_identity, store.index(l).row_identity)
  info = json.loads((pathlib.Path(mined.directory) / mine.MINED).read_text())
  assert info["source_content"] == store.content_digest and info["checkpoint"] == "pretrained"
  assert info["texts_linked"] == 2 and info["texts_copied"] == 0


def test_filters_have_sentence_transformers_meanings():
  # One query, positive score .9; candidates best first.
  scores = np.array([[0.95, 0.89, 0.85, 0.80, 0.70, 0.50]], np.float32)
  cands = np.array([[0, 1, 2, 3, 4, 5]])
  excluded = np.array([[True, False, False, False, False, False]])
  positive = np.array([0.9], np.float32)
  sel = lambda **kw: mine.select(scores, cands, excluded, positive,  # noqa: E731
                                 mine.Settings(**kw))[0][0].tolist()
  assert sel(num_negatives=2) == [1, 2]
  assert sel(num_negatives=2, range_min=1) == [2, 3]
  assert sel(num_negatives=3, range_max=2) == [1, 2, -1]
  # absolute: drop score + .06 > .9, i.e. above .84.
  assert sel(num_negatives=2, absolute_margin=0.06) == [3, 4]
  # relative: drop score > .9 - .9 * .1 = .81.
  assert sel(num_negatives=2, relative_margin=0.1) == [3, 4]
  assert sel(num_negatives=5, max_score=0.75) == [4, 5, -1, -1, -1]
  # range counts what the filters left: rank 0 is then .80.
  assert sel(num_negatives=1, range_min=1, absolute_margin=0.06) == [4]
  _, counts = mine.select(scores, cands, excluded, positive,
                          mine.Settings(num_negatives=2, absolute_margin=0.06, max_score=0.75))
  assert counts == {"same identity": 1, "absolute_margin": 2, "max_score": 1}
  with pytest.raises(ValueError, match="range_max"):
    mine.Settings(num_negatives=4, range_max=3).check()


def test_cross_lingual_mines_with_every_languages_query(toy):
  cfg, _, tmp = toy
  embedder = VectorEmbedder()
  rows = mine.run(config_of(cfg, tmp), pretrained=True, encoder=embedder,
                  settings=mine.Settings(num_negatives=3, cross_lingual=True))
  mined = store_lib.Store(rows[0]["store"])
  # g1 in en: its en query (1, 0, 0) ranks n_a, p2, n_b; its de query (0, .6, .8) ranks p3 .64,
  # n_c .597, n_b .36: merged in turn, en first, without repeats.
  assert mined_negatives(mined, "en")["g1"] == ["n_a", "p3", "p2"]
  # g2's queries are the same vector in both languages: the merge adds nothing new.
  assert mined_negatives(mined, "en")["g2"] == ["n_c", "n_b", "p1"]
  # Each language's queries were encoded once, though both languages read them.
  queries = [t for k, t in embedder.seen if k == "query"]
  assert len(queries) == len(set(queries)) == 7


class Crash(Exception):
  pass


def test_resume_skips_finished_languages_and_mined_stores(toy):
  cfg, _, tmp = toy
  settings = mine.Settings(num_negatives=2)
  whole = store_lib.Store(mine.run(config_of(cfg, tmp / "whole"), pretrained=True,
                                   encoder=VectorEmbedder(), settings=settings)[0]["store"])

  class CrashOnEnglish(VectorEmbedder):
    def encode(self, params, texts, kind, **kw):
      if any(t.startswith(("q ", "p", "n_")) for t in texts):
        raise Crash()
      return super().encode(params, texts, kind, **kw)

  with pytest.raises(Crash):  # killed while English is mined: German (mined first) is kept
    mine.run(config_of(cfg, tmp), pretrained=True, encoder=CrashOnEnglish(), settings=settings)
  parts = list((tmp / "stores" / "mined").glob("*.parts/*.npz"))
  assert [p.name for p in parts] == ["de.npz"]
  again = VectorEmbedder()
  rows = mine.run(config_of(cfg, tmp), pretrained=True, encoder=again, settings=settings)
  assert not any(t.split(" |")[0] in ("f eins", "d1") for _, t in again.seen)  # German skipped
  assert {t.split(" |")[0] for _, t in again.seen} >= {"q one", "p1", "n_a"}
  resumed = store_lib.Store(rows[0]["store"])
  for l in ("de", "en"):
    for g in range(resumed.num_groups):
      np.testing.assert_array_equal(resumed.negatives(l, g), whole.negatives(l, g))
  assert not list((tmp / "stores" / "mined").glob("*.parts"))
  # A third run finds the mined store and encodes nothing.
  third = VectorEmbedder()
  rows3 = mine.run(config_of(cfg, tmp), pretrained=True, encoder=third, settings=settings)
  assert rows3[0]["status"] == "already mined" and rows3[0]["store"] == rows[0]["store"]
  assert third.seen == []


def test_training_reads_the_mined_negatives_through_num_negatives(toy):
  cfg, _, tmp = toy
  rows = mine.run(config_of(cfg, tmp), pretrained=True, encoder=VectorEmbedder(),
                  settings=mine.Settings(num_negatives=2))
  mined_cfg = dict(cfg, store=rows[0]["store"], num_negatives=2)
  config = ml_collections.ConfigDict(dict(store_dir=str(tmp / "stores"), prepare="never",
                                          sources=[mined_cfg]))
  sources = input_pipeline.open_sources(config)
  source = sources["toy"]
  g1 = source.store.group_ids(range(source.store.num_groups)).index("g1")
  _, _, negatives = sampler_lib.example_rows(source, "de", "en", g1, 0, 2)
  assert [l for l, _ in negatives] == ["en", "en"]
  assert texts_of(source.store, "en", [r for _, r in negatives]) == ["n_a", "p2"]
  # negative_langs='query+passage': the de->en example takes one of them in de, its query's
  # language (the first of its de negatives), and keeps the first en one.
  both = sampler_lib.make_source("toy", source.store, dict(mined_cfg, negative_langs="query+passage"),
                                 0)
  _, _, negatives = sampler_lib.example_rows(both, "de", "en", g1, 0, 2)
  assert [l for l, _ in negatives] == ["en", "de"]
  de_first = int(source.store.negatives("de", g1)[0])
  assert negatives == [("en", [r for _, r in sampler_lib.example_rows(
      source, "de", "en", g1, 0, 2)[2]][0]), ("de", de_first)]
  # A mono example is unchanged.
  assert (sampler_lib.example_rows(both, "en", "en", g1, 0, 2)
          == sampler_lib.example_rows(source, "en", "en", g1, 0, 2))


def test_the_binary_mines_what_a_brute_force_ranking_of_the_same_model_gives(tmp_path, shared_data):
  """The tiny random BERT through `python -m hybrid_ir.mine`; every mined row checked."""
  stores = tmp_path / "stores"
  out = tmp_path / "mined"
  cmd = [sys.executable, "-m", "hybrid_ir.mine", "--config",
         str(REPO / "tests" / "configs_test_train.py"), "--pretrained", "--out", str(out),
         f"--config.input.store_dir={stores}", "--num_negatives", "3", "--range_min", "1"]
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")}
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The console: the progress bar on stderr; the backend probe and store preparation in the log.
  bars = [l for l in proc.stderr.replace("\r", "\n").splitlines() if l.strip()]
  assert bars and all(l.startswith("mine: encode") for l in bars), bars
  assert "Unable to initialize backend" in (out / "mine.INFO").read_text()
  lines = proc.stdout.strip().splitlines()
  row = json.loads(lines[0])
  assert lines[1].startswith("train on them: set each source's store")
  assert len(lines) == 2, proc.stdout  # nothing else on stdout
  mined = store_lib.Store(row["store"])
  from hybrid_ir import config_flags
  from hybrid_ir import models
  config = config_flags.load_config_file(str(REPO / "tests" / "configs_test_train.py"))
  encoder = models.load_encoder(config.model)
  for lang in ("en", "de"):
    idx = mined.index(lang)
    pool = mine.passage_pool(store_lib.Store(json.loads(
        (pathlib.Path(row["store"]) / mine.MINED).read_text())["source_store"]), lang)
    p = encoder.encode(encoder.params, mined.texts(lang, pool), "passage", progress=False)
    groups = np.flatnonzero((idx.group_query >= 0) & (idx.group_positive >= 0))[:40]
    q = encoder.encode(encoder.params, mined.texts(lang, idx.group_query[groups]), "query",
                       progress=False)
    s = q @ p.T
    for i, g in enumerate(groups):
      order = np.argsort(-s[i], kind="stable")
      other = [int(pool[j]) for j in order
               if idx.row_identity[pool[j]] != mined.group_identity[g]]
      # Near-ties may order differently between this float32 matmul and the search's; compare
      # as sets where the scores are within 1e-6 of the window's edge.
      want = other[1:4]
      got = mined.negatives(lang, g).tolist()
      assert len(got) == 3
      assert not np.isin(idx.row_identity[got], mined.group_identity[g]).any()
      if got != want:
        edge = s[i][np.searchsorted(pool, want)]
        assert np.allclose(np.sort(s[i][np.searchsorted(pool, got)]), np.sort(edge), atol=1e-5)
  # The evaluator's relevance rule, which knows no identities, finds no false negative ...
  audit = mine.lareqa_false_negatives(mined, shared_data, "xquad-r")
  assert audit["negatives"] == 3 * sum((mined.index(l).group_query >= 0).sum() for l in ("en", "de"))
  assert audit["false_negatives"] == 0
  # ... and does find them where they are: the same store with each group's positive as its
  # negative.
  base = store_lib.Store(json.loads((pathlib.Path(row["store"]) / mine.MINED).read_text())
                         ["source_store"])
  parts = {}
  for lang in ("en", "de"):
    pos = base.index(lang).group_positive
    parts[lang] = (*store_lib.csr([[int(p)] if p >= 0 else [] for p in pos]), {})
  bad = mine.write_mined_store(base, mine.epath.Path(tmp_path / "bad"), parts, {})
  audit = mine.lareqa_false_negatives(bad, shared_data, "xquad-r")
  assert audit["false_negatives"] == audit["negatives"] > 0


def test_an_aligned_store_is_mined_once_for_every_language(tmp_path):
  """mMARCO's layout: one index shared by the languages (row r is one passage id in each), so
  the first language's queries mine it."""
  def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(l + "\n" for l in lines))
    return str(path)
  m = tmp_path / "mm"
  coll = {"en": ["10\tp ten | 1 0 0", "7\tp seven | 0.8 0.6 0", "3\tp three | 0.6 0.8 0"],
          "de": ["10\tp zehn | 0 0 1", "7\tp sieben | 0 1 0", "3\tp drei | 1 0 0"]}
  queries = {"en": ["1\tq one | 1 0.1 0", "2\tq two | 0 1 0"],
             "de": ["1\tf eins | 1 0 0", "2\tf zwei | 0 1 0"]}
  cfg = dict(name="mm", kind="mmarco",
             collections={l: write(m / "collections" / f"{l}.tsv", v) for l, v in coll.items()},
             queries={l: write(m / "queries" / f"{l}.tsv", v) for l, v in queries.items()},
             triples=write(m / "triples.tsv", ["1\t10\t3", "2\t7\t10", "2\t3\t10"]))
  store = data.open_store(cfg, tmp_path / "stores")
  assert store.aligned and store.group_ids(range(3)) == ["1:10", "2:3", "2:7"]
  rows = mine.run(config_of(cfg, tmp_path), pretrained=True, encoder=VectorEmbedder(),
                  settings=mine.Settings(num_negatives=2))
  mined = store_lib.Store(rows[0]["store"])
  assert mined.aligned and list(rows[0]["counts"]) == ["all"]
  # de comes first: its query (1, 0, 0) for 1:10 ranks p drei (1, 0, 0) before p sieben (0, 1, 0).
  assert texts_of(mined, "de", mined.negatives("de", 0)) == ["p drei", "p sieben"]
  assert texts_of(mined, "en", mined.negatives("en", 0)) == ["p three", "p seven"]
  # Query 2's two positives (3 and 7) are one identity: only passage 10 is left for them.
  for g in (1, 2):
    assert texts_of(mined, "en", mined.negatives("en", g)) == ["p ten"]
