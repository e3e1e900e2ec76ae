"""LAReQA (XQuAD-R, MLQA-R) reader: questions, candidate sentences and relevance.

The two sets (Roy et al. 2020, arXiv 2004.05484) are SQuAD v1.1 JSON files, one per language, whose
paragraphs also carry `sentences` and `sentence_breaks` ([start, end) character offsets into
`context`). Candidates are every sentence of every paragraph of every language; a question's
relevant set is the answer sentence of each language version of its id (ids are shared across
languages). The answer sentence is the one whose break satisfies start <= answer_start < end: an
inclusive end would give two sentences for ~30 questions.

Candidate text comes from the `sentences` field (one XQuAD-R `tr` paragraph has shifted offsets in
`context`). Duplicate sentence strings stay separate candidates, as in LAReQA.

Recommended for: the evaluators in `hybrid_ir.evaluators.lareqa`, and as parallel QA training
records (question, answer sentence) when training on one set and evaluating on the other.
Related: `hybrid_ir.evaluators.lareqa.LareqaEvaluator`, `hybrid_ir.retrieval`.
"""
import dataclasses
import logging
import pathlib
from typing import Sequence

import numpy as np

from hybrid_ir.data import squad
from hybrid_ir.data import text_files

LANGS = {
    'xquad-r': ('ar', 'de', 'el', 'en', 'es', 'hi', 'ru', 'th', 'tr', 'vi', 'zh'),
    'mlqa-r': ('ar', 'de', 'en', 'es', 'hi', 'vi', 'zh'),
}
CANDIDATE_TEXTS = ('sentence', 'sentence+context')


@dataclasses.dataclass(frozen=True)
class LareqaData:
  """One LAReQA set, flattened into parallel arrays.

  Candidates are ordered by language (in `langs` order), then article, paragraph and sentence, so
  each language's candidates are a contiguous slice. Questions are ordered the same way.

  Attributes:
    name: 'xquad-r' or 'mlqa-r'.
    langs: the languages loaded, in order; `*_lang` arrays index into it.
    question_ids: [Nq] question id (shared by translations).
    question_lang: [Nq] int, language index.
    question_text: [Nq] question strings.
    cand_lang: [Nc] int, language index.
    cand_sentence: [Nc] sentence strings (from the `sentences` field).
    cand_context: [Nc] the paragraph `context` each sentence comes from.
    cand_title: [Nc] article title.
    cand_paragraph: [Nc] int, paragraph index within its article.
    cand_sentence_idx: [Nc] int, sentence index within its paragraph.
    answer: [Nq] int, candidate index of the question's own answer sentence (same language).
    relevant_by_lang: [Nq, L] int, candidate index of the answer sentence of the same question id
      in language l, or -1 where the id has no version in l (MLQA-R only).
    candidate_text: which text `cand_text` returns ('sentence' or 'sentence+context').
  """
  name: str
  langs: tuple[str, ...]
  question_ids: list[str]
  question_lang: np.ndarray
  question_text: list[str]
  cand_lang: np.ndarray
  cand_sentence: list[str]
  cand_context: list[str]
  cand_title: list[str]
  cand_paragraph: np.ndarray
  cand_sentence_idx: np.ndarray
  answer: np.ndarray
  relevant_by_lang: np.ndarray
  candidate_text: str = 'sentence'

  @property
  def num_questions(self) -> int:
    return len(self.question_ids)

  @property
  def num_candidates(self) -> int:
    return len(self.cand_sentence)

  @property
  def num_relevant_pairs(self) -> int:
    return int((self.relevant_by_lang >= 0).sum())

  @property
  def cand_text(self) -> list[str]:
    """The strings to encode as passages, per `candidate_text`.

    'sentence+context' follows LAReQA's original encoding (answer sentence plus its paragraph);
    a single-text encoder sees them joined by a space.
    """
    if self.candidate_text == 'sentence':
      return list(self.cand_sentence)
    return [f'{s} {c}' for s, c in zip(self.cand_sentence, self.cand_context)]

  def relevant(self, q: int) -> np.ndarray:
    """Candidate indices relevant to question `q` (one per language version of its id)."""
    r = self.relevant_by_lang[q]
    return r[r >= 0]

  def lang_slice(self, lang: str, kind: str) -> slice:
    """The contiguous slice of questions (kind='query') or candidates (kind='passage') in `lang`."""
    arr = {'query': self.question_lang, 'passage': self.cand_lang}[kind]
    idx = np.flatnonzero(arr == self.langs.index(lang))
    return slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)

  def summary(self) -> str:
    return (f'{self.name}: {len(self.langs)} languages, {self.num_questions} questions '
            f'({len(set(self.question_ids))} ids), {self.num_candidates} candidates, '
            f'{self.num_relevant_pairs} relevant (question, candidate) pairs')


def _field(obj: dict, key: str, path: pathlib.Path, where: str):
  if not isinstance(obj, dict) or key not in obj:
    raise ValueError(f'{path}: missing field {where}.{key}')
  return obj[key]


def _read_language(path: pathlib.Path, lang_idx: int, out: dict) -> None:
  """Appends one language file's questions and candidates to `out` (lists)."""
  doc = text_files.load_json(path)
  articles = _field(doc, 'data', path, '<root>')
  if not isinstance(articles, list):
    raise ValueError(f'{path}: field data is {type(articles).__name__}, expected a list')
  for a_i, article in enumerate(articles):
    title = _field(article, 'title', path, f'data[{a_i}]')
    for p_i, para in enumerate(_field(article, 'paragraphs', path, f'data[{a_i}]')):
      where = f'data[{a_i}].paragraphs[{p_i}]'
      sentences = _field(para, 'sentences', path, where)
      breaks = _field(para, 'sentence_breaks', path, where)
      context = _field(para, 'context', path, where)
      if len(sentences) != len(breaks):
        raise ValueError(f'{path}: {where}: {len(sentences)} sentences but {len(breaks)} '
                         'sentence_breaks')
      first = len(out['cand_sentence'])
      for s_i, sentence in enumerate(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
          raise ValueError(f'{path}: {where}.sentences[{s_i}] is empty: {sentence!r}')
        out['cand_lang'].append(lang_idx)
        out['cand_sentence'].append(sentence)
        out['cand_context'].append(context)
        out['cand_title'].append(title)
        out['cand_paragraph'].append(p_i)
        out['cand_sentence_idx'].append(s_i)
      for q_i, qa in enumerate(_field(para, 'qas', path, where)):
        qwhere = f'{where}.qas[{q_i}]'
        qid = _field(qa, 'id', path, qwhere)
        text = _field(qa, 'question', path, qwhere)
        if not isinstance(text, str) or not text.strip():
          raise ValueError(f'{path}: {qwhere}.question (id {qid}) is empty: {text!r}')
        answers = _field(qa, 'answers', path, qwhere)
        if not answers:
          raise ValueError(f'{path}: {qwhere}.answers (id {qid}) is empty')
        # XQuAD-R and MLQA-R have one answer per question; with several we keep the first, as
        # LAReQA does, and say so.
        if len(answers) > 1:
          out['multi_answer'] += 1
        start = _field(answers[0], 'answer_start', path, f'{qwhere}.answers[0]')
        hit = squad.answer_sentence(breaks, start, f'{path}: {qwhere} (id {qid})')
        out['question_ids'].append(qid)
        out['question_lang'].append(lang_idx)
        out['question_text'].append(text)
        out['answer'].append(first + hit)


def load_lareqa(data_dir: str | pathlib.Path, name: str, langs: Sequence[str] | None = None,
                candidate_text: str = 'sentence') -> LareqaData:
  """Loads XQuAD-R or MLQA-R from `data_dir/<name>/<lang>.json`.

  Inputs:
    data_dir: folder holding `xquad-r/` and `mlqa-r/` (e.g. ../shared/data).
    name: 'xquad-r' or 'mlqa-r'.
    langs: subset of languages (default: all of the set's languages, in canonical order). The
      candidate pool and the relevant sets then cover only these languages.
    candidate_text: 'sentence' (default; the paper's setting) or 'sentence+context' (LAReQA's
      original encoding, sentence followed by its paragraph).

  Returns a `LareqaData`. Raises ValueError naming the file and field for a missing file, malformed
  JSON, a missing field, an unknown language, an empty text, or an answer_start outside every
  sentence.
  """
  if name not in LANGS:
    raise ValueError(f'unknown LAReQA set {name!r}; available: {sorted(LANGS)}')
  if candidate_text not in CANDIDATE_TEXTS:
    raise ValueError(f'candidate_text={candidate_text!r}; expected one of {CANDIDATE_TEXTS}')
  langs = tuple(LANGS[name] if langs is None else langs)
  unknown = [l for l in langs if l not in LANGS[name]]
  if unknown:
    raise ValueError(f'unknown language(s) {unknown} for {name}; available: {list(LANGS[name])}')
  if len(set(langs)) != len(langs):
    raise ValueError(f'duplicate language in {list(langs)}')
  folder = pathlib.Path(data_dir) / name
  out = {k: [] for k in ('question_ids', 'question_lang', 'question_text', 'cand_lang',
                         'cand_sentence', 'cand_context', 'cand_title', 'cand_paragraph',
                         'cand_sentence_idx', 'answer')}
  out['multi_answer'] = 0
  for l_i, lang in enumerate(langs):
    path = folder / f'{lang}.json'
    if not path.is_file():
      raise FileNotFoundError(f'{path}: missing LAReQA file for {name} language {lang!r}')
    _read_language(path, l_i, out)
  if out['multi_answer']:
    logging.warning('%s: %d questions have several answers; used the first of each', name,
                    out['multi_answer'])

  # Relevance: the answer sentence of every language version of the question id.
  answer = np.asarray(out['answer'], np.int64)
  q_lang = np.asarray(out['question_lang'], np.int32)
  by_id: dict[str, np.ndarray] = {}
  for qid, l_i, a in zip(out['question_ids'], q_lang, answer):
    row = by_id.setdefault(qid, np.full(len(langs), -1, np.int64))
    if row[l_i] >= 0:
      raise ValueError(f'{folder / (langs[l_i] + ".json")}: question id {qid} occurs twice')
    row[l_i] = a
  relevant_by_lang = np.stack([by_id[qid] for qid in out['question_ids']]) if by_id else (
      np.zeros((0, len(langs)), np.int64))

  data = LareqaData(
      name=name, langs=langs, question_ids=out['question_ids'], question_lang=q_lang,
      question_text=out['question_text'], cand_lang=np.asarray(out['cand_lang'], np.int32),
      cand_sentence=out['cand_sentence'], cand_context=out['cand_context'],
      cand_title=out['cand_title'], cand_paragraph=np.asarray(out['cand_paragraph'], np.int32),
      cand_sentence_idx=np.asarray(out['cand_sentence_idx'], np.int32), answer=answer,
      relevant_by_lang=relevant_by_lang, candidate_text=candidate_text)
  logging.info('%s', data.summary())
  return data
