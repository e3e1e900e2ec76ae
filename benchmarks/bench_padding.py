r"""How much of a real training batch is padding: the (query, passage) bucket shapes of the first
`--steps` batches of an experiment run's pipeline, and the share of real tokens in them.

Why: the e5-small train step of bench_peer.py (32 x 32 query + 32 x 64 passage tokens) runs at
half the time of a real training step; real batches pad to larger buckets.

  PYTHONPATH=. python benchmarks/bench_padding.py                      # ~1 min
  PYTHONPATH=. python benchmarks/bench_padding.py --arg model=e5-small,train=mlqa-r,negatives=3
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
  args = ap.parse_args(argv)

  from hybrid_ir import experiments, input_pipeline, models
  config = experiments.load_config(experiments.find_config(), args.arg)
  encoder = models.load_encoder(config.model)
  pipeline = input_pipeline.make_pipeline(config.input, encoder.tokenize)
  keys = ("query", "passage", "negative")
  shapes, real, padded = collections.Counter(), 0, 0
  batches = iter(pipeline)
  for _ in range(args.steps):
    b = next(batches)
    masks = [b[k]["attention_mask"] for k in keys if k in b]
    shapes[tuple(m.shape[1] for m in masks)] += 1
    real += sum(int(m.sum()) for m in masks)
    padded += sum(m.size for m in masks)
  pipeline.close()
  names = " x ".join(k for k in keys if k in b)
  print(f"{args.arg}, buckets {tuple(encoder.tokenizer.buckets)}, first {args.steps} batches")
  print(f"  padded lengths ({names}): " +
        ", ".join(f"{s}: {n}" for s, n in sorted(shapes.items())))
  print(f"  tokens per step: {padded / args.steps:.0f} padded, {real / args.steps:.0f} real "
        f"({real / padded:.0%})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
