"""Parallel-query distance: how close a model puts one question in two languages.

The question our users ask of the batch ratio α is how fast X-Y batches pull translations
together. This evaluator measures it directly: on held-out questions of a LAReQA set (each id has
a version per language), the mean squared Euclidean distance between the L2-normalised query
embeddings of the same question in languages a and b (= 2 - 2 cos; 0 when translations coincide,
2 when orthogonal), per language pair and macro-averaged over the pairs. Run during training
(`eval_every`) it gives a convergence curve per α; the final value sits next to the mAPs.

Metric names ({name} is the eval's name, e.g. 'parallel'):
  {name}/sq_dist (macro over language pairs), {name}/sq_dist/{a}-{b}, {name}/num_questions.

Questions: the first `max_questions` ids (in the set's order) that have a version in at least
two of the languages loaded; the same ones for every checkpoint, so the curve is comparable.
"""
import dataclasses
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from hybrid_ir import evaluators
from hybrid_ir.data import lareqa as lareqa_data

PredictFn = Callable[[Any, list[str], str], np.ndarray]


@dataclasses.dataclass
class ParallelResult:
  name: str
  langs: tuple[str, ...]
  num_questions: int
  pair_sq_dist: dict[str, float]  # 'a-b' -> mean over the questions both languages have

  def metrics(self) -> dict[str, float]:
    return {"sq_dist": float(np.mean(list(self.pair_sq_dist.values()))),
            "num_questions": self.num_questions}

  def named_metrics(self) -> Iterator[tuple[str, float]]:
    for k, v in self.metrics().items():
      yield f"{self.name}/{k}", v
    for pair, v in self.pair_sq_dist.items():
      yield f"{self.name}/sq_dist/{pair}", v

  def to_json(self) -> dict:
    return {"type": "parallel", "name": self.name, "langs": list(self.langs),
            "metrics": self.metrics(), "pair_sq_dist": self.pair_sq_dist}

  def table(self, label: str | None = None) -> str:
    m = self.metrics()
    return evaluators.markdown_table(
        [self.name, "squared distance of parallel queries", "questions", "language pairs"],
        [[label or "", f"{m['sq_dist']:.4f}", m["num_questions"], len(self.pair_sq_dist)]])


def pair_distances(emb: np.ndarray, ids: Sequence[str], lang: np.ndarray,
                   langs: Sequence[str]) -> dict[str, float]:
  """{'a-b': mean ||e_a - e_b||^2 over the ids present in both a and b} for a < b (langs order).

  emb: [N, D] embeddings of N questions; ids, lang: each question's id and language index."""
  index = {}  # (id, language index) -> row
  for row, (qid, l) in enumerate(zip(ids, lang)):
    index[(qid, int(l))] = row
  out = {}
  for a in range(len(langs)):
    for b in range(a + 1, len(langs)):
      rows = [(index[(q, a)], index[(q, b)]) for q in dict.fromkeys(ids)
              if (q, a) in index and (q, b) in index]
      if rows:
        ra, rb = np.array(rows).T
        out[f"{langs[a]}-{langs[b]}"] = float(((emb[ra] - emb[rb]) ** 2).sum(-1).mean())
  return out


class Evaluator:
  """Inputs: predict_fn (params, texts, kind) -> [N, D] L2-normalised; dataset, data_dir, langs
  as for the LAReQA evaluator; max_questions: question ids used (each in every language it has);
  name: metric prefix."""

  def __init__(self, predict_fn: PredictFn, dataset: str = "mlqa-r", data_dir: str = "",
               langs: Sequence[str] | None = None, max_questions: int = 200,
               name: str = "parallel"):
    if max_questions < 1:
      raise ValueError(f"{name}: max_questions={max_questions}; it must be >= 1")
    data = lareqa_data.load_lareqa(data_dir, dataset, langs)
    counts = {}
    for qid in data.question_ids:
      counts[qid] = counts.get(qid, 0) + 1
    chosen = set([q for q, n in counts.items() if n >= 2][:max_questions])
    if not chosen:
      raise ValueError(f"{name}: no question of {dataset} has a version in two of {data.langs}")
    keep = [i for i, q in enumerate(data.question_ids) if q in chosen]
    self.predict_fn, self.name, self.langs = predict_fn, name, data.langs
    self.ids = [data.question_ids[i] for i in keep]
    self.texts = [data.question_text[i] for i in keep]
    self.lang = data.question_lang[keep]
    self.num_questions = len(chosen)
    self.result: ParallelResult | None = None

  def run(self, params) -> Iterator[tuple[str, float]]:
    emb = np.asarray(self.predict_fn(params, self.texts, "query"), np.float32)
    if emb.shape[0] != len(self.texts):
      raise ValueError(f"predict_fn returned {emb.shape[0]} embeddings for {len(self.texts)} texts")
    self.result = ParallelResult(self.name, self.langs, self.num_questions,
                                 pair_distances(emb, self.ids, self.lang, self.langs))
    yield from self.result.named_metrics()
