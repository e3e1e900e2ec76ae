"""The validation evaluator: the held-out fold of a training source, its loss and its mAP.

Fixture: a LAReQA-format set 'xquad-r' of 9 articles in en, de, es (es lacks q0, as MLQA-R lacks
versions). Article k has paragraph 0 with two sentences, its answer 'A<k>' (first or second) and a
distractor 'D<k>', and question q<k>; odd articles also have a paragraph 1 of two sentences and
no question. The fake encoder maps q<k> and A<k> in every language to e_k, every other sentence to
a direction of its own, so the ranking is perfect and every loss is known.
"""
import json

import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir import evaluators
from hybrid_ir.evaluators import validation

LANGS = ("en", "de", "es")
NUM_ARTICLES = 9


def _para(sentences, qas):
  context, breaks = "", []
  for s in sentences:
    breaks.append([len(context), len(context) + len(s)])
    context += s + " "
  return {"context": context.strip(), "sentences": sentences, "sentence_breaks": breaks,
          "qas": qas}


def _article(k, lang):
  answer, other = f"A{k} {lang}.", f"D{k} {lang}."
  sents = [answer, other] if k % 2 == 0 else [other, answer]
  start = 0 if k % 2 == 0 else len(other) + 1
  qas = [] if (lang == "es" and k == 0) else [
      {"id": f"q{k}", "question": f"q{k} {lang}?", "answers": [{"answer_start": start, "text": "x"}]}]
  paras = [_para(sents, qas)]
  if k % 2:
    paras.append(_para([f"E{k} {lang} a.", f"E{k} {lang} b."], []))
  return {"title": f"T{k}", "paragraphs": paras}


@pytest.fixture
def source(tmp_path):
  folder = tmp_path / "xquad-r"
  folder.mkdir()
  for lang in LANGS:
    doc = {"data": [_article(k, lang) for k in range(NUM_ARTICLES)]}
    (folder / f"{lang}.json").write_text(json.dumps(doc))
  return dict(name="xq", kind="squad", path=str(folder), langs=list(LANGS), split="train",
              num_folds=3, fold=0, split_seed=0)


class PerfectEncoder:
  """q<k> and A<k> (any language) -> e_k; every other text -> its own direction."""

  def __init__(self):
    self.others = {}

  def vector(self, text):
    word = text.split()[0]
    if word[0] in "qA":
      i = int(word[1:])
    else:
      i = self.others.setdefault(text, NUM_ARTICLES + len(self.others))
    v = np.zeros(64, np.float32)
    v[i] = 1
    return v

  def __call__(self, params, texts, kind):
    assert kind in ("query", "passage")
    return np.stack([self.vector(t) for t in texts])


def _random_encoder(params, texts, kind):
  """A fixed pseudo-random unit vector per (text, kind), different params give other ones."""
  out = []
  for t in texts:
    v = np.random.default_rng(abs(hash((t, kind, params))) % 2**32).normal(size=16)
    out.append(v / np.linalg.norm(v))
  return np.array(out, np.float32)


def test_the_held_out_fold_is_the_one_training_leaves_out(source, tmp_path):
  ids, articles = validation.heldout_fold(source)

  def groups(split):
    store = data.open_store(dict(source, split=split, name=f"xq-{split}"), tmp_path / "stores",
                            workers=1)
    return set(store.group_ids(range(store.num_groups)))

  train, held = groups("train"), groups("heldout")
  assert ids == held and not ids & train and ids | train == {f"q{k}" for k in range(NUM_ARTICLES)}
  assert articles == {f"{l}/{q[1:]}" for q in ids for l in LANGS if (l, q) != ("es", "q0")}
  # The evaluator's questions and candidates are those articles' and nothing else.
  d = validation.heldout_data(source)
  assert set(d.question_ids) == ids
  held_k = {int(q[1:]) for q in ids}
  assert {int(s.split()[0][1:]) for s in d.cand_sentence} == held_k
  assert len(d.cand_sentence) == sum(
      (4 if k % 2 else 2) * (3 if k else 2) for k in held_k)  # q0 has no es version
  for q in range(d.num_questions):  # relevant: the answer sentence of every language version
    rel = [d.cand_sentence[c] for c in d.relevant(q)]
    assert rel == [f"A{d.question_ids[q][1:]} {d.langs[l]}." for l in range(3)
                   if (d.langs[l], d.question_ids[q]) != ("es", "q0")]
  # split 'heldout' names the same fold.
  assert validation.heldout_fold(dict(source, split="heldout"))[0] == ids


def test_perfect_encoder_known_loss_and_map(source):
  e = evaluators.make({"validation": dict(type="validation", source=source, batch_size=2,
                                          num_batches=3, temperature=0.5)}, PerfectEncoder())
  ev = e["validation"]
  assert [b.kind for b in ev.batches] == ["mono"] * 3 + ["cross"] * 3
  (_, _, metrics), = evaluators.run(e, params=None)
  # Each query: its positive at 1/t = 2, the batch's other positive at 0.
  known = np.log1p(np.exp(-2.0))
  for k in ("loss", "loss_mono", "loss_cross"):
    assert metrics[f"validation/{k}"] == pytest.approx(known, rel=1e-6)
  assert metrics["validation/acc"] == 1.0
  for k in ("mo_map", "cr_map", "mul_map", "mo_r1", "cr_r1", "mul_r10"):
    assert metrics[f"validation/{k}"] == 1.0
  assert metrics["validation/num_questions"] == ev.data.num_questions
  assert ev.result.dataset == "xquad-r held-out fold 0"


def test_the_loss_is_info_nce_on_fixed_pairs_of_one_id(source):
  ev = validation.ValidationEvaluator(_random_encoder, source, batch_size=3, num_batches=4,
                                      temperature=0.1, seed=7)
  d = ev.data
  for b in ev.batches:
    assert len(set(b.identities)) == 3
    for q, p in zip(b.queries, b.passages):
      assert p in d.relevant(q)  # the same id's answer
      same = d.question_lang[q] == d.cand_lang[p]
      assert same if b.kind == "mono" else not same
    if b.kind == "mono":
      assert len(set(d.question_lang[b.queries])) == 1
  first = dict(ev.run("params-0"))
  # An independent InfoNCE: softmax over the batch's positives, label the diagonal.
  q = _random_encoder("params-0", d.question_text, "query")
  c = _random_encoder("params-0", d.cand_text, "passage")
  ref = {"mono": [], "cross": []}
  for b in ev.batches:
    logits = q[b.queries] @ c[b.passages].T / 0.1
    logits = logits - logits.max(1, keepdims=True)
    ref[b.kind].append(np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits)))
  assert first["validation/loss_mono"] == pytest.approx(np.mean(ref["mono"]), rel=1e-5)
  assert first["validation/loss_cross"] == pytest.approx(np.mean(ref["cross"]), rel=1e-5)
  assert first["validation/loss"] == pytest.approx(
      (np.mean(ref["mono"]) + np.mean(ref["cross"])) / 2, rel=1e-5)
  # The batches are fixed: the same params give the same values, other params others.
  assert dict(ev.run("params-0")) == first
  assert dict(ev.run("params-1"))["validation/loss"] != first["validation/loss"]
  again = validation.ValidationEvaluator(_random_encoder, source, batch_size=3, num_batches=4,
                                         temperature=0.1, seed=7)
  assert [b.queries.tolist() for b in again.batches] == [b.queries.tolist() for b in ev.batches]


def test_one_language_has_no_cross_batches(source):
  ev = validation.ValidationEvaluator(PerfectEncoder(), dict(source, langs=["de"]),
                                      batch_size=2, num_batches=2)
  assert [b.kind for b in ev.batches] == ["mono", "mono"]
  out = dict(ev.run(None))
  assert "validation/loss_cross" not in out and out["validation/loss"] == out[
      "validation/loss_mono"]


@pytest.mark.parametrize("change,message", [
    (dict(split="all"), r"validation source 'xq': split 'all' holds no article out"),
    (dict(kind="bitext"), r"validation source 'xq': kind 'bitext'; held-out folds exist for "
                          r"kind 'squad' only"),
    (dict(fold=3), r"source 'xq': fold 3 not in \[0, 3\)"),
])
def test_bad_sources_are_named(source, change, message):
  with pytest.raises(ValueError, match=message):
    validation.ValidationEvaluator(PerfectEncoder(), dict(source, **change))


def test_a_folder_that_is_no_lareqa_set_and_a_batch_larger_than_the_fold(source, tmp_path):
  other = tmp_path / "mine"
  (tmp_path / "xquad-r").rename(other)
  with pytest.raises(ValueError, match=r"`path` must be a LAReQA set's folder .* got path="
                                       r"'.*mine'"):
    validation.ValidationEvaluator(PerfectEncoder(), dict(source, path=str(other)))
  other.rename(tmp_path / "xquad-r")
  with pytest.raises(ValueError, match=r"xquad-r held-out fold 0: no language has "
                                       r"batch_size=32 held-out questions \(at most 3\)"):
    validation.ValidationEvaluator(PerfectEncoder(), source, batch_size=32)


def test_real_xquad_r_fold_matches_the_heldout_store(shared_data, tmp_path):
  source = dict(name="xquad-r", kind="squad", path=str(shared_data / "xquad-r"),
                langs=["de", "en", "zh"], split="train", num_folds=5, fold=0, split_seed=0)
  store = data.open_store(dict(source, split="heldout"), tmp_path / "stores", workers=1)
  held = set(store.group_ids(range(store.num_groups)))
  d = validation.heldout_data(source)
  assert set(d.question_ids) == held and d.langs == ("de", "en", "zh")
  assert d.num_questions == 3 * len(held)  # XQuAD-R: every question in every language
  # Its candidates are whole articles: every sentence of a paragraph that asks a question.
  full = validation.lareqa_data.load_lareqa(shared_data, "xquad-r", ["de", "en", "zh"])
  kept = set(d.cand_context)
  for q in np.flatnonzero([i in held for i in full.question_ids]):
    assert full.cand_context[full.answer[q]] in kept
  assert 0.1 < d.num_candidates / full.num_candidates < 0.3
