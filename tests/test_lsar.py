"""Language-subspace removal (hybrid_ir.lsar): the math on planted offsets, the paper's algorithm,
the refusals, and that eval, search and export apply it (tiny random BERT, offline)."""
import json
import pathlib

import numpy as np
import pytest

from hybrid_ir import config_flags
from hybrid_ir import lsar

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN_CONFIG = REPO / "tests" / "configs_test_train.py"
LSAR = dict(rank=1, source="xquad", max_texts_per_lang=48)


def planted(langs=("ar", "de", "en", "zh"), d=24, r=2, n=50, seed=0):
  """(embeddings [L, n, d] = shared content + a per-language offset in span(Q), Q [d, r])."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(d, r)))
  content = rng.normal(size=(n, d))
  # Offsets with a non-zero mean over languages: centring must not leave their mean behind.
  offsets = (3.0 * rng.normal(size=(len(langs), r)) + 3.0) @ q.T
  return content[None] + offsets[:, None], q


def normalise(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_projection_removes_a_planted_language_offset_exactly():
  langs = ("ar", "de", "en", "zh")
  emb, q = planted(langs)
  basis, sv = lsar.subspace(emb.mean(1), 2, langs)
  assert basis.shape == (24, 2) and sv.shape == (4,)
  np.testing.assert_allclose(basis.T @ basis, np.eye(2), atol=1e-6)
  # The basis spans the planted subspace: Q has no component outside it.
  np.testing.assert_allclose(q - basis @ (basis.T @ q), 0, atol=1e-6)
  out = normalise(lsar.remove(emb, basis.astype(np.float64)))
  np.testing.assert_allclose(out @ q, 0, atol=1e-6)  # no planted direction is left
  for l in range(1, len(langs)):  # translations coincide
    np.testing.assert_allclose(out[l], out[0], atol=1e-6)
  # Before the projection they did not: the test has something to remove.
  assert np.abs(normalise(emb[1]) - normalise(emb[0])).max() > 0.1


def test_rank_one_removes_the_direction_two_languages_differ_in():
  emb, q = planted(("de", "en"), r=1)
  basis, _ = lsar.subspace(emb.mean(1), 1, ("de", "en"))
  np.testing.assert_allclose(abs(float(basis[:, 0] @ q[:, 0])), 1.0, atol=1e-6)


def paper_algorithm_1(means: np.ndarray, rank: int) -> np.ndarray:
  """Xie et al.'s Algorithm 1 as printed: centre, rank-r SVD, move the centre to the point of
  the affine span nearest the origin, SVD again. means [L, d] -> M_s [d, rank]."""
  m = means.T  # [d, L]
  ones = np.ones((m.shape[1], 1))
  mu = m.mean(1, keepdims=True)
  u, s, vt = np.linalg.svd(m - mu, full_matrices=False)
  m_rec = mu + u[:, :rank] @ np.diag(s[:rank]) @ vt[:rank]
  x = np.linalg.pinv(m_rec.T) @ ones
  mu = x / float((x.T @ x)[0, 0])
  u2, _, _ = np.linalg.svd(m_rec - mu @ ones.T, full_matrices=False)
  return u2[:, :rank]


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_the_papers_recentring_gives_the_same_projection(rank):
  rng = np.random.default_rng(rank)
  langs = tuple("abcdef")
  means = rng.normal(size=(6, 20)) + rng.normal(size=20)
  ours, _ = lsar.subspace(means, rank, langs)
  theirs = paper_algorithm_1(means, rank)
  np.testing.assert_allclose(ours @ ours.T, theirs @ theirs.T, atol=1e-5)


@pytest.mark.parametrize("rank", [0, 3, 4])
def test_a_rank_from_the_number_of_languages_up_is_refused(rank):
  means = np.random.default_rng(0).normal(size=(3, 8))
  with pytest.raises(ValueError, match=rf"model.lsar.rank={rank}: .*\(3 languages: en, de, "
                     r"zh\)"):
    lsar.subspace(means, rank, ("en", "de", "zh"))


# ------------------------------------------------------------------------------------------------
# The config, and the binaries on the tests' tiny random BERT.
# ------------------------------------------------------------------------------------------------

def small_config(shared_data, **lsar_settings):
  """The trainer tests' tiny BERT on XQuAD-R en+de (source 'xquad'), evaluated on two MLQA-R
  languages, with model.lsar."""
  config = config_flags.load_config_file(str(TRAIN_CONFIG))
  config.evals = {"mlqa-r": dict(type="lareqa", dataset="mlqa-r", data_dir=str(shared_data),
                                 langs=("de", "zh"), candidate_text="sentence")}
  config.eval_batch_size = 256
  config.model.lsar = dict(LSAR, **lsar_settings)
  return config


def test_settings_are_checked_and_rank_zero_is_off(shared_data):
  config = small_config(shared_data, rank=0)
  assert lsar.check(config) is None
  config.model.lsar.rank = 1
  assert lsar.check(config) == lsar.Settings(1, "xquad", 48)
  config.model.lsar.source = "nope"
  with pytest.raises(ValueError, match=r"model.lsar.source='nope' is not a training source of "
                     r"this config; known: \['xquad'\]"):
    lsar.check(config)
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['rnak'\]"):
    lsar.settings({"lsar": {"rnak": 1}})
  with pytest.raises(ValueError, match="needs model.lsar.source"):
    lsar.settings({"lsar": {"rank": 1}})
  # Off by default in every preset of the configs, so the flag is there to set.
  # Embedding caches name an encoding without it (LSAR weights fingerprint with their basis).
  from configs import common
  from hybrid_ir import models
  assert common.model("e5-small").lsar.to_dict() == lsar.DEFAULTS
  assert lsar.encoding_settings(common.model("e5-small")) == models.PRESETS["e5-small"]


def test_a_rank_as_large_as_the_sources_languages_is_refused_before_encoding(shared_data,
                                                                               tmp_path):
  from hybrid_ir import models
  config = small_config(shared_data, rank=2)
  encoder = models.load_encoder(config.model)
  with pytest.raises(ValueError, match=r"model.lsar.rank=2: .* source 'xquad' .*\(2 languages: "
                     r"en, de\)"):
    lsar.estimate(config, encoder, encoder.params, directory=tmp_path, tag="pretrained")
  assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def evaluated(shared_data, tmp_path_factory):
  """eval --pretrained with LSAR rank 1, run twice: (config, workdir, first report, summaries)."""
  from hybrid_ir import evaluation
  config = small_config(shared_data)
  workdir = tmp_path_factory.mktemp("lsar_eval")
  evaluation.run(config, workdir, pretrained=True)
  first = json.loads((workdir / "eval" / "pretrained.json").read_text())
  return config, workdir, first


def test_eval_applies_the_subspace_inside_the_encoder(evaluated):
  from hybrid_ir import evaluation
  from hybrid_ir import models
  from hybrid_ir.evaluators import lareqa
  config, workdir, report = evaluated
  info = report["lsar"]
  assert (info["rank"], info["source"], info["langs"]) == (1, "xquad", ["en", "de"])
  assert info["counts"] == [48, 48]
  path = pathlib.Path(info["path"])
  assert path.parent == workdir / "lsar" and path.name.startswith("pretrained-")
  basis = np.load(path)["basis"]
  assert basis.shape == (32, 1)
  # The report's metrics are those of the plain embeddings with the saved basis projected out
  # and normalised again, computed here without eval.
  encoder = models.load_encoder(config.model)
  data = evaluation.make_evaluators(config, encoder)["mlqa-r"].data
  plain = [encoder.encode(encoder.params, texts, kind, batch_size=256, progress=False)
           for texts, kind in ((list(data.question_text), "query"), (data.cand_text, "passage"))]
  projected = [normalise(lsar.remove(e.astype(np.float64), basis.astype(np.float64)))
               for e in plain]
  want = dict(lareqa.evaluate_embeddings(data, *projected).named_metrics("mlqa-r"))
  unprojected = dict(lareqa.evaluate_embeddings(data, *plain).named_metrics("mlqa-r"))
  for k in ("mlqa-r/mo_map", "mlqa-r/cr_map", "mlqa-r/mul_map"):
    assert report["metrics"][k] == pytest.approx(want[k], abs=1e-5), k
  # A random model's scores have near-ties that float32 rounding orders either way: ranks move
  # by one here and there.
  assert report["metrics"]["mlqa-r/rank_distance"] == pytest.approx(
      want["mlqa-r/rank_distance"], rel=1e-4)
  assert report["metrics"]["mlqa-r/mul_map"] != pytest.approx(unprojected["mlqa-r/mul_map"],
                                                              abs=1e-4)


def test_the_subspace_is_estimated_once_and_read_after(evaluated, shared_data):
  from hybrid_ir import models
  config, workdir, report = evaluated
  path = pathlib.Path(report["lsar"]["path"])
  mtime = path.stat().st_mtime_ns
  encoder = models.load_encoder(config.model)
  sub = lsar.estimate(config, encoder, encoder.params, directory=workdir / "lsar",
                      tag="pretrained")
  assert sub.loaded and sub.path == path and path.stat().st_mtime_ns == mtime
  assert "read from" in sub.summary()
  np.testing.assert_array_equal(sub.basis, np.load(path)["basis"])
  # Other settings get their own file.
  other = lsar.estimate(small_config(shared_data, max_texts_per_lang=32), encoder,
                        encoder.params, directory=workdir / "lsar", tag="pretrained")
  assert not other.loaded and other.path != path and other.counts == (32, 32)


def test_search_applies_it_to_queries_and_documents(evaluated, tmp_path):
  from hybrid_ir import models
  from hybrid_ir import search
  config, workdir, report = evaluated
  docs = ["Der Fluss fließt durch die Stadt.", "The river flows through the city.",
          "东京是日本的首都。", "Berlin ist die Hauptstadt Deutschlands.", "A cat on a mat."]
  queries = ["Wo fließt der Fluss?", "What is the capital of Japan?"]
  (tmp_path / "corpus.tsv").write_text("".join(f"d{i}\t{t}\n" for i, t in enumerate(docs)))
  (tmp_path / "queries.tsv").write_text("".join(f"q{i}\t{t}\n" for i, t in enumerate(queries)))
  encoder = models.load_encoder(config.model)
  out = search.run(config, corpus=str(tmp_path / "corpus.tsv"),
                   queries=str(tmp_path / "queries.tsv"), workdir=str(workdir), pretrained=True,
                   out=str(tmp_path / "run.trec"), k=5, cache_dir=str(tmp_path / "cache"),
                   encoder=encoder)
  assert out["lsar"] == report["lsar"]["path"]  # eval's estimate, read again
  basis = np.load(out["lsar"])["basis"].astype(np.float64)
  q = normalise(lsar.remove(encoder.encode(encoder.params, queries, "query", progress=False)
                            .astype(np.float64), basis))
  d = normalise(lsar.remove(encoder.encode(encoder.params, docs, "passage", progress=False)
                            .astype(np.float64), basis))
  got = {}
  for line in (tmp_path / "run.trec").read_text().splitlines():
    qid, _, docid, _, score, _ = line.split()
    got[(int(qid[1:]), int(docid[1:]))] = float(score)
  assert len(got) == 10
  for (i, j), score in got.items():
    assert score == pytest.approx(float(q[i] @ d[j]), abs=1e-5)


def test_export_writes_it_for_sentence_transformers(shared_data, tmp_path):
  pytest.importorskip("torch")
  st = pytest.importorskip("sentence_transformers")
  from hybrid_ir import export
  from hybrid_ir import models
  config = small_config(shared_data)
  out = export.export(config, tmp_path / "out", pretrained=True, lsar_dir=tmp_path / "lsar")
  modules = json.loads((out / "modules.json").read_text())
  assert [m["type"].rsplit(".", 1)[1] for m in modules] == [
      "Transformer", "Pooling", "Dense", "Normalize"]
  assert "Language subspace removed (LSAR" in (out / "README.md").read_text()
  encoder = models.load_encoder(config.model)
  sub = lsar.estimate(config, encoder, encoder.params, directory=tmp_path / "lsar",
                      tag="pretrained")
  assert sub.loaded  # the export's own estimate
  model = st.SentenceTransformer(str(out), device="cpu")
  texts = ["Wie alt ist der Eiffelturm?", "The cat sat on the mat.", "东京是日本的首都。",
           "Москва — столица России."]
  for kind in ("query", "passage"):
    ours = encoder.encode(encoder.params, texts, kind, progress=False, basis=sub.basis)
    theirs = model.encode(texts, prompt_name=kind, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    np.testing.assert_allclose(theirs @ sub.basis, 0, atol=1e-5)
