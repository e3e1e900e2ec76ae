"""A small mMARCO-shaped fixture: <dir>/collections/<lang>.tsv, queries/<lang>.tsv and
triples.ids.tsv, with mMARCO's proportions (~50 triples per query, ~4.5 per passage). Each text
starts with its id and language, so tests can check which rows a store or batch holds.

(benchmarks/synthetic_mmarco.py writes the same layout at 10^5-10^7 triples from real words.)
"""
import os

import numpy as np


def write_synthetic(directory, num_triples: int, langs=('en', 'de', 'es'), seed: int = 0,
                    negatives_per_query: int = 50, triples_per_passage: float = 4.5) -> dict:
  """Writes the files; returns the mmarco source config that reads them (no name)."""
  rng = np.random.default_rng(seed)
  directory = str(directory)
  n_q = max(1, num_triples // negatives_per_query)
  n_p = max(2, int(num_triples / triples_per_passage))
  words = [''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), size=k))
           for k in rng.integers(2, 10, size=2000)]
  for kind, n, length in (('queries', n_q, 6), ('collections', n_p, 55)):
    os.makedirs(os.path.join(directory, kind), exist_ok=True)
    for lang in langs:
      with open(os.path.join(directory, kind, f'{lang}.tsv'), 'w', encoding='utf-8') as f:
        for i in range(n):
          text = ' '.join(rng.choice(words, size=max(1, rng.poisson(length))))
          f.write(f'{i}\t{i} {lang} {text}\n')
  q = rng.integers(0, n_q, size=num_triples)
  pos = (q * 7919) % n_p  # one positive per query
  neg = rng.integers(0, n_p, size=num_triples)
  neg = np.where(neg == pos, (neg + 1) % n_p, neg)
  with open(os.path.join(directory, 'triples.ids.tsv'), 'w') as f:
    f.writelines(f'{a}\t{b}\t{c}\n' for a, b, c in zip(q.tolist(), pos.tolist(), neg.tolist()))
  return {'kind': 'mmarco',
          'collections': {l: os.path.join(directory, 'collections', f'{l}.tsv') for l in langs},
          'queries': {l: os.path.join(directory, 'queries', f'{l}.tsv') for l in langs},
          'triples': os.path.join(directory, 'triples.ids.tsv')}
