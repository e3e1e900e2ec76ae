"""The parallel-query distance evaluator on embeddings whose answer is known."""
import numpy as np
import pytest

from hybrid_ir import evaluators
from hybrid_ir.evaluators import parallel


def test_pair_distances_known_answer():
  # q1 in en/de/zh, q2 in en/de only. en-de: q1 identical (0), q2 orthogonal (2) -> mean 1.
  e = np.eye(3, dtype=np.float32)
  emb = np.stack([e[0], e[0], e[1], e[1], e[2]])  # q1 en, q1 de, q1 zh, q2 en, q2 de
  ids = ["q1", "q1", "q1", "q2", "q2"]
  lang = np.array([0, 1, 2, 0, 1])
  d = parallel.pair_distances(emb, ids, lang, ("en", "de", "zh"))
  assert d == pytest.approx({"en-de": 1.0, "en-zh": 2.0, "de-zh": 2.0})


def test_evaluator_on_real_questions(shared_data):
  def by_id(params, texts, kind):  # embeds a question by its id: translations coincide
    del params, kind
    return np.stack([rows[t] for t in texts])

  ev = evaluators.make({"parallel": dict(type="parallel", dataset="mlqa-r",
                                         data_dir=str(shared_data), langs=["de", "en", "zh"],
                                         max_questions=50)}, by_id)["parallel"]
  assert ev.num_questions == 50 and len(set(ev.ids)) == 50
  ids = sorted(set(ev.ids))
  rows = {t: np.eye(len(ids), dtype=np.float32)[ids.index(q)] for t, q in zip(ev.texts, ev.ids)}
  assert len(rows) == len(ev.texts)  # no two questions share a text here, so by_id is well defined
  m = dict(ev.run(None))
  assert m["parallel/sq_dist"] == 0.0 and m["parallel/num_questions"] == 50
  assert set(k.rsplit("/", 1)[1] for k in m if k.startswith("parallel/sq_dist/")) == {
      "de-en", "de-zh", "en-zh"}
  # A model that ignores the id: every embedding orthogonal to every other -> distance 2.
  rows = {t: np.eye(len(ev.texts), dtype=np.float32)[i] for i, t in enumerate(ev.texts)}
  assert dict(ev.run(None))["parallel/sq_dist"] == pytest.approx(2.0)
  assert "| 2.0000 | 50 | 3 |" in ev.result.table("x")


def test_bad_settings_are_named(shared_data):
  with pytest.raises(ValueError, match="max_questions=0"):
    parallel.Evaluator(None, data_dir=str(shared_data), max_questions=0)
  with pytest.raises(ValueError, match="no question of mlqa-r has a version in two"):
    parallel.Evaluator(None, data_dir=str(shared_data), langs=["en"])
