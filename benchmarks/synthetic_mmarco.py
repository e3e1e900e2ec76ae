"""Synthetic mMARCO files in the real layout, for benchmarks/bench_data.py at 10^5-10^7 triples.

The tests keep a small fixture of their own (tests/synthetic_mmarco.py); this generator adds what
a measurement needs: texts sampled from a stream of real words, and files written in blocks.
"""
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def write_synthetic(directory: str | os.PathLike, num_triples: int, langs=('en', 'de', 'es'),
                    seed: int = 0, negatives_per_query: int = 50,
                    triples_per_passage: float = 4.5,
                    words: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
  """Writes mMARCO-shaped files: <dir>/collections/<lang>.tsv, queries/<lang>.tsv,
  triples.ids.tsv, with mMARCO's proportions (~50 triples per query, ~4.5 per passage; query
  ~6 words, passage ~55 words). Returns the source config that reads them.

  words: {lang: a stream of real words} to sample texts from (so that tokenization costs what
  real text costs; word frequencies follow the stream's); default random letter strings.
  """
  rng = np.random.default_rng(seed)
  directory = str(directory)
  n_q = max(1, num_triples // negatives_per_query)
  n_p = max(2, int(num_triples / triples_per_passage))
  letters = np.array([''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), size=k))
                      for k in rng.integers(2, 10, size=20_000)])
  for kind, n, length in (('queries', n_q, 6), ('collections', n_p, 55)):
    os.makedirs(os.path.join(directory, kind), exist_ok=True)
    for lang in langs:
      vocab = np.asarray(words[lang]) if words else letters
      with open(os.path.join(directory, kind, f'{lang}.tsv'), 'w', encoding='utf-8') as f:
        for start in range(0, n, 50_000):
          k = min(50_000, n - start)
          lengths = np.maximum(1, rng.poisson(length, size=k))
          toks = vocab[rng.integers(0, len(vocab), size=int(lengths.sum()))]
          cuts = np.cumsum(lengths)[:-1]
          # Each text starts with its id and language, so tests can check the rows.
          f.writelines(f'{start + i}\t{start + i} {lang} {" ".join(t)}\n'
                       for i, t in enumerate(np.split(toks, cuts)))
  q = rng.integers(0, n_q, size=num_triples)
  pos = (q * 7919) % n_p  # one positive per query
  neg = rng.integers(0, n_p, size=num_triples)
  neg = np.where(neg == pos, (neg + 1) % n_p, neg)
  with open(os.path.join(directory, 'triples.ids.tsv'), 'w') as f:
    for start in range(0, num_triples, 1_000_000):
      block = np.stack([q, pos, neg], 1)[start:start + 1_000_000]
      f.write('\n'.join('\t'.join(map(str, r)) for r in block.tolist()) + '\n')
  return {'kind': 'mmarco',
          'collections': {l: os.path.join(directory, 'collections', f'{l}.tsv') for l in langs},
          'queries': {l: os.path.join(directory, 'queries', f'{l}.tsv') for l in langs},
          'triples': os.path.join(directory, 'triples.ids.tsv')}
