"""The data layer at scale: synthetic mMARCO in its real layout -> store -> tokenized batches.

  python benchmarks/bench_data.py --triples 1e5,1e6,1e7 [--langs en,de,es] [--batch 100]
      [--steps 200] [--dir /tmp/bench_data] [--keep]

For each size it writes synthetic mMARCO files (benchmarks/synthetic_mmarco.py: per
language a collection and training queries, one id triples file; ~50 triples per query, ~4.5
per passage, queries ~6 and passages ~55 words drawn from real text of that language in
../shared/data/bitext), then measures, each in a fresh process:
  prepare_s       python -m hybrid_ir.prepare's work: triples parsed, texts and index written
                  (all cores)
  store_bytes     the store on disk
  first_batch_s   from the start of a training-side process (imports included) to its first
                  tokenized batch: open the store, build the sampler and tf.data pipeline
  peak_rss_bytes  that process's peak resident memory, after --steps batches
  examples_per_s  tokenized examples per second (batch --batch, 1 hard negative each; an
                  example = query + positive + negative, the real e5-small tokenizer)
  restore_s       process 1 of 2 rebuilding its pipeline at a saved state of step 1,000,000 and
                  yielding the first batch, after imports, the tokenizer and TensorFlow's runtime
                  start, which any start pays (restore_with_tf_start_s includes the last)
The training-side process runs twice; the first one's numbers are reported as cold_* (this VM
reclaims page cache proactively, so a first start reads TensorFlow and the store from disk).
and prints one JSON line per size, then deletes what it wrote (unless --keep). The state of
step 1,000,000 is a real state of 1,000 steps whose step and stream positions are scaled by
1,000: restoring costs O(number of streams), whatever the values.
Targets (issue "training data at the paper's scale"): first_batch_s <= 30, peak_rss_bytes
<= 2 GiB with growth <= 16 bytes per triple, restore_s <= 1, >= 2,000 examples/s on 2 cores.
"""
import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

from hybrid_ir.hardware import cpu_model

T0 = time.time()  # the child's start, for first_batch_s (imports included)
DATA = pathlib.Path(os.environ.get(
    'HYBRID_IR_DATA', pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'))


def peak_rss_bytes() -> int:
  """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: a child started by
  fork+exec inherits its parent's ru_maxrss (the bench's parent holds the word lists)."""
  for line in pathlib.Path('/proc/self/status').read_text().splitlines():
    if line.startswith('VmHWM:'):
      return int(line.split()[1]) * 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def real_words(langs) -> dict[str, list[str]]:
  """Word streams per language from ../shared/data/bitext (LibreOffice help, Bible verses), so
  that synthetic passages tokenize like real text (e5's tokenizer: ~1.8 pieces per word)."""
  import gzip  # pylint: disable=g-import-not-at-top
  words = {l: [] for l in langs}
  for name in ('lohelp.tsv.gz', 'bible.tsv.gz'):
    with gzip.open(DATA / 'bitext' / name, 'rt', encoding='utf-8') as f:
      next(f)
      for line in f:
        _, lang, text = line.rstrip('\n').split('\t')
        if lang in words and len(words[lang]) < 2_000_000:
          words[lang].extend(text.split())
  missing = [l for l, w in words.items() if not w]
  if missing:
    raise ValueError(f'no bitext words for {missing}; bitext has en de el es hi ru tr vi zh ar')
  return words


def input_config(source: dict, store_dir: str, batch: int) -> dict:
  return {'batch_size': batch, 'seed': 0, 'prefetch': 4, 'store_dir': store_dir,
          'prepare': 'never', 'type_probs': {'mono': 0.5, 'cross': 0.5, 'mixed': 0.0},
          'sources': [dict(source, name='mmarco', num_negatives=1)]}


def tokenizer():
  from hybrid_ir.models import tokenizers, weights  # pylint: disable=g-import-not-at-top
  return tokenizers.HFTokenizer.from_file(
      weights.bundled_file('semantra_multilingual', 'assets/multilingual-e5-small/tokenizer.json'),
      query_prefix='query: ', passage_prefix='passage: ', buckets=(16, 32, 64, 128))


def child_prepare(args) -> dict:
  from hybrid_ir import data  # pylint: disable=g-import-not-at-top
  t = time.time()
  cfg = dict(json.loads(args.source), name='mmarco')
  store = data.open_store(cfg, args.store_dir, workers=os.cpu_count())
  seconds = time.time() - t
  size = sum(p.stat().st_size for p in pathlib.Path(str(store.directory)).rglob('*')
             if p.is_file())
  return {'prepare_s': round(seconds, 2), 'store_bytes': size}


def child_train(args) -> dict:
  from hybrid_ir import input_pipeline, sampler  # pylint: disable=g-import-not-at-top
  config = input_config(json.loads(args.source), args.store_dir, args.batch)
  tok = tokenizer()
  pipeline = input_pipeline.make_pipeline(config, tok, process_index=0, process_count=1)
  next(pipeline)
  first = time.time() - T0
  t = time.time()
  for _ in range(args.steps):
    next(pipeline)
  rate = args.steps * args.batch / (time.time() - t)
  rss = peak_rss_bytes()
  # A state of step 1,000,000 for the restore measurement (see the module docstring).
  s = sampler.Sampler(input_pipeline.open_sources(config), config)
  for _ in range(1000):
    s.next_batch()
  state = s.get_state()
  state.update(step=state['step'] * 1000,
               positions={k: v * 1000 for k, v in state['positions'].items()},
               pending={k: [x * 1000 for x in v] for k, v in state['pending'].items()})
  pipeline.close()
  return {'first_batch_s': round(first, 2), 'peak_rss_bytes': rss,
          'examples_per_s': round(rate, 1), 'state': state}


def child_restore(args) -> dict:
  from hybrid_ir import input_pipeline  # pylint: disable=g-import-not-at-top
  config = input_config(json.loads(args.source), args.store_dir, args.batch)
  tok = tokenizer()
  tok(['warm up'], 'query')
  state = json.loads(args.state)
  out = {}
  # The first tf.data pipeline of a process also starts TensorFlow's runtime (~1 s here), which
  # any start pays once; the second measures restoring the data state alone.
  for key in ('restore_with_tf_start_s', 'restore_s'):
    t = time.time()
    pipeline = input_pipeline.make_pipeline(config, tok, process_index=1, process_count=2,
                                            state=state)
    batch = next(pipeline)
    out[key] = round(time.time() - t, 3)
    assert batch['step'] == state['step'], (batch['step'], state['step'])
    pipeline.close()
  return out


def run_child(mode: str, **kw) -> dict:
  cmd = [sys.executable, __file__, f'--_child={mode}'] + [f'--{k}={v}' for k, v in kw.items()]
  out = subprocess.run(cmd, capture_output=True, text=True, env=dict(
      os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu'))
  if out.returncode:
    raise RuntimeError(f'{mode} failed:\n{out.stderr[-4000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--triples', default='1e5,1e6,1e7')
  parser.add_argument('--langs', default='en,de,es')
  parser.add_argument('--batch', type=int, default=100)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--dir', default='/tmp/hybrid_ir_bench_data')
  parser.add_argument('--keep', action='store_true',
                      help='keep the files (raw files are reused by the next run)')
  parser.add_argument('--_child', default=None)
  parser.add_argument('--source', default=None)
  parser.add_argument('--store_dir', default=None)
  parser.add_argument('--state', default=None)
  args = parser.parse_args()
  if args._child:  # pylint: disable=protected-access
    fn = {'prepare': child_prepare, 'train': child_train, 'restore': child_restore}[args._child]
    print(json.dumps(fn(args)))
    return

  import synthetic_mmarco  # pylint: disable=g-import-not-at-top  (next to this script)
  print(f'# {cpu_model()}, {os.cpu_count()} cores', flush=True)
  langs = tuple(args.langs.split(','))
  words = None
  for size in (int(float(x)) for x in args.triples.split(',')):
    marker = pathlib.Path(args.dir) / f'{size}' / 'raw' / 'source.json'
    if not marker.exists():
      words = real_words(langs)
      break
  for size in (int(float(x)) for x in args.triples.split(',')):
    root = pathlib.Path(args.dir) / f'{size}'
    marker = root / 'raw' / 'source.json'  # raw files kept by --keep are reused
    shutil.rmtree(root / 'stores', ignore_errors=True)
    t = time.time()
    if marker.exists() and json.loads(marker.read_text())['langs'] == list(langs):
      source = json.loads(marker.read_text())['source']
    else:
      shutil.rmtree(root, ignore_errors=True)
      source = synthetic_mmarco.write_synthetic(root / 'raw', size, langs=langs, words=words)
      marker.write_text(json.dumps({'langs': list(langs), 'source': source}))
    generate_s = time.time() - t
    raw = sum(p.stat().st_size for p in (root / 'raw').rglob('*') if p.is_file())
    common = dict(source=json.dumps(source), store_dir=str(root / 'stores'), batch=args.batch)
    row = {'triples': size, 'langs': args.langs, 'raw_bytes': raw,
           'generate_s': round(generate_s, 1)}
    row.update(run_child('prepare', **common))
    # Twice: this VM reclaims page cache proactively, so the first process after a while reads
    # TensorFlow's files and the store from disk ('cold_'); the second finds them cached.
    cold = run_child('train', steps=args.steps, **common)
    trained = run_child('train', steps=args.steps, **common)
    state = trained.pop('state')
    row.update(trained, cold_first_batch_s=cold['first_batch_s'],
               cold_examples_per_s=cold['examples_per_s'],
               peak_rss_bytes=max(cold['peak_rss_bytes'], trained['peak_rss_bytes']))
    row.update(run_child('restore', state=json.dumps(state), **common))
    print(json.dumps(row), flush=True)
    if not args.keep:
      shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()
