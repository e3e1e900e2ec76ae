"""Times exact scoring + ranking for XQuAD-R's multilingual setting, and reports peak memory.

13,090 queries x 13,014 candidates (dim 384 by default), each query with 11 relevant candidates
(one per language); one `retrieval.rank_relevant` call gives the multilingual ranks, the per-language
(Mo/Cr) ranks via candidate groups, and top-10 lists — everything the LAReQA evaluator needs.
Embeddings are random unit vectors unless --query_emb/--cand_emb point at cached .npy files (for
example from `LareqaEvaluator(cache_dir=...)`). Relevance and languages come from the real XQuAD-R
layout when the data is found, else a synthetic layout of the same shape.

Targets (issue 2): <= 5 s and <= 2 GB peak RSS on the 2-core CPU. Run:
  python benchmarks/bench_retrieval.py [--repeats 3] [--data_dir ../shared/data]
Prints compile time, the best and median of `repeats` timed runs, peak RSS (resource.getrusage
ru_maxrss, whole process incl. JAX runtime) and the ratios to the targets.
"""
import argparse
import pathlib
import resource
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from hybrid_ir import retrieval  # noqa: E402
from hybrid_ir.data import lareqa  # noqa: E402

TARGET_S = 5.0
TARGET_BYTES = 2 << 30


def _unit(x: np.ndarray) -> np.ndarray:
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--data_dir', default=str(pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'))
  ap.add_argument('--dataset', default='xquad-r', choices=['xquad-r', 'mlqa-r'],
                  help='layout (relevance, languages); mlqa-r is the 4,199 x 20,534 pool')
  ap.add_argument('--query_emb', default=None, help='cached [13090, D] .npy (else random)')
  ap.add_argument('--cand_emb', default=None, help='cached [13014, D] .npy (else random)')
  ap.add_argument('--dim', type=int, default=384)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--query_block', type=int, default=None)
  ap.add_argument('--stream_corpus', type=int, default=0,
                  help='instead: streaming top-100 over a random corpus of this many passages, '
                       'generated shard by shard (e.g. 1000000), for --stream_queries queries')
  ap.add_argument('--stream_queries', type=int, default=512)
  args = ap.parse_args()
  if args.stream_corpus:
    return stream(args)

  try:
    data = lareqa.load_lareqa(args.data_dir, args.dataset)
    rel, groups = data.relevant_by_lang, data.cand_lang
    nq, nc = data.num_questions, data.num_candidates
    layout = args.dataset
  except FileNotFoundError:
    nq, nc, nl = 13090, 13014, 11
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(nl), -(-nc // nl))[:nc]
    rel = np.stack([rng.choice(np.flatnonzero(groups == l), nq) for l in range(nl)], 1)
    layout = 'synthetic'
  rng = np.random.default_rng(0)
  if args.query_emb:
    q, c = np.load(args.query_emb), np.load(args.cand_emb)
    source = 'cached'
  else:
    q = _unit(rng.standard_normal((nq, args.dim), np.float32))
    c = _unit(rng.standard_normal((nc, args.dim), np.float32))
    source = 'random'
  print(f'{layout} layout, {source} embeddings: {q.shape[0]} queries x {c.shape[0]} candidates, '
        f'dim {q.shape[1]}, {int((rel >= 0).sum())} relevant pairs')

  def once():
    return retrieval.rank_relevant(q, c, rel, cand_groups=groups, k=10,
                                   query_block=args.query_block)

  t0 = time.perf_counter()
  once()
  first = time.perf_counter() - t0
  times, cpu = [], []
  for _ in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    out = once()
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  assert out.ranks[rel >= 0].min() >= 1 and out.group_ranks.max() <= nc
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
  best, med = min(times), float(np.median(times))
  print(f'first call (incl. compile): {first:.2f} s')
  print(f'scoring + ranking: best {best:.2f} s, median {med:.2f} s over {args.repeats} runs '
        f'-> {best / TARGET_S:.2f}x of the {TARGET_S:.0f} s target (median {med / TARGET_S:.2f}x)')
  print(f'CPU time per run (all threads of this process): median {np.median(cpu):.2f} s; on a '
        f'shared machine wall time above CPU time / 2 means other processes took the cores')
  print(f'peak RSS: {peak / 2**30:.2f} GiB -> {peak / TARGET_BYTES:.2f}x of the 2 GiB target')


def stream(args) -> None:
  """Memory stays bounded by one shard + one score block, whatever the corpus size."""
  rng = np.random.default_rng(0)
  q = _unit(rng.standard_normal((args.stream_queries, args.dim), np.float32))
  shard = 65536

  def shards():
    for start in range(0, args.stream_corpus, shard):
      yield _unit(rng.standard_normal((min(shard, args.stream_corpus - start), args.dim),
                                      np.float32))

  t0, c0 = time.perf_counter(), time.process_time()
  scores, idx = retrieval.top_k(q, shards(), 100)
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  assert (np.diff(scores, axis=1) <= 0).all() and idx.max() < args.stream_corpus
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  full = args.stream_corpus * args.dim * 4
  print(f'streaming top-100: {args.stream_queries} queries x {args.stream_corpus} passages '
        f'(dim {args.dim}; corpus would be {full / 2**30:.2f} GiB as one array) in {wall:.1f} s '
        f'wall, {cpu:.1f} s CPU (incl. generating the random shards)')
  print(f'peak RSS: {peak / 2**30:.2f} GiB -> {peak / TARGET_BYTES:.2f}x of the 2 GiB target')


if __name__ == '__main__':
  main()
