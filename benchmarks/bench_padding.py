r"""How much of a real training batch is padding: the (query, passage) bucket shapes of the first
`--steps` batches of an experiment run's pipeline, and the share of real tokens in them.

Why: the e5-small train step of bench_peer.py (32 x 32 query + 32 x 64 passage tokens) runs at
half the time of a real training step; real batches pad to larger buckets.

  PYTHONPATH=. python benchmarks/bench_padding.py                      # ~1 min
  PYTHONPATH=. python benchmarks/bench_padding.py --arg model=e5-small,train=mlqa-r,negatives=3
  PYTHONPATH=. python benchmarks/bench_padding.py --buckets 16,32,64,128 --buckets fine

Each `--buckets` set (training bucket lengths, or `fine`: tokenizers.fine_buckets of the model's)
is counted on the same batches, and so is packing (input.packing): the real-token share, and how
many distinct batch shapes each makes, each of which costs the train step one compile.
"""
import argparse
import collections
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--arg", default="model=e5-small,train=xquad-r,mono=0.5,cross=0.5",
                  help="configs/experiments/base.py arg (hybrid_ir.grids)")
  ap.add_argument("--steps", type=int, default=150, help="batches counted")
  ap.add_argument("--buckets", action="append", default=[],
                  help="training bucket lengths, comma-separated, or 'fine'; repeatable "
                       "(default: the model's own)")
  args = ap.parse_args(argv)

  from hybrid_ir import experiments, input_pipeline, models
  from hybrid_ir.models import tokenizers
  config = experiments.load_config(experiments.find_config(), args.arg)
  encoder = models.load_encoder(config.model)
  own = tuple(encoder.tokenizer.buckets)
  sets = [own if b == "own" else tokenizers.fine_buckets(own) if b == "fine"
          else tuple(sorted(int(x) for x in b.split(","))) for b in args.buckets or ["own"]]
  for s in sets:
    if s[-1] != own[-1]:
      raise SystemExit(f"--buckets {s}: must end at the model's largest bucket {own[-1]}")
  # The batches' real lengths, from the pipeline as training sees it (its own buckets); any
  # other bucket set pads the same texts to its own lengths.
  pipeline = input_pipeline.make_pipeline(config.input, encoder.tokenize)
  keys = ("query", "passage", "negative")
  lengths, real = [], 0
  batches = iter(pipeline)
  for _ in range(args.steps):
    b = next(batches)
    masks = {k: b[k]["attention_mask"] for k in keys if k in b}
    lengths.append({k: m.sum(1) for k, m in masks.items()})
    real += sum(int(m.sum()) for m in masks.values())
  pipeline.close()
  names = " x ".join(lengths[0])
  print(f"{args.arg}, first {args.steps} batches; {real / args.steps:.0f} real tokens per step")
  for s in sets:
    shapes, padded = collections.Counter(), 0
    for step in lengths:
      padded_to = {k: encoder.tokenizer.bucket_for(int(n.max()), s) for k, n in step.items()}
      shapes[tuple(padded_to.values())] += 1
      padded += sum(padded_to[k] * len(n) for k, n in step.items())
    print(f"  buckets {s}: {len(shapes)} shapes (compiles); padded lengths ({names}): " +
          ", ".join(f"{k}: {n}" for k, n in sorted(shapes.items())))
    print(f"    tokens per step: {padded / args.steps:.0f} padded, {real / args.steps:.0f} real "
          f"({real / padded:.0%})")
  # Packing (input.packing): each kind's texts packed into rows of the largest bucket as
  # training packs them (tokenizers.pack_ids, one process on one device); a batch then costs
  # its rows x that length, whatever its longest text.
  width, slots, shapes = own[-1], 0, collections.Counter()
  for step in lengths:
    rows = {k: tokenizers.pack_ids([[1] * int(x) for x in n], width, 0)["input_ids"].shape[0]
            for k, n in step.items()}
    shapes[tuple(rows.values())] += 1
    slots += sum(rows.values()) * width
  print(f"  packed into rows of {width} (input.packing): {len(shapes)} shapes (compiles); rows "
        f"({names}): " + ", ".join(f"{k}: {n}" for k, n in sorted(shapes.items())))
  print(f"    tokens per step: {slots / args.steps:.0f} padded, {real / args.steps:.0f} real "
        f"({real / slots:.0%})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
