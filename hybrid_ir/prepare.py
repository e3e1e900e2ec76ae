"""Prepares every training source of a config into its store, once, before training.

  python -m hybrid_ir.prepare --config configs/paper/xlmr_hybrid.py [--overwrite] [--workers N]

For each `config.input.sources` entry it parses the raw files (in parallel over the machine's
cores where the source kind can) into `<input.store_dir>/<name>-<hash>` (or the source's
`store`), or checks that a store already there was made from the same files and settings. It
prints one line per source: groups, languages, bytes on disk, seconds. Small sources (the demo,
the experiments) are prepared on first use by training as well (`input.prepare='auto'`); large
ones (mMARCO) should be prepared here, and configs for them set `input.prepare='never'` so that
every host of a pod does not start preparing them at once. See `hybrid_ir.data`.
"""
import json
import os
import time

from absl import flags
from etils import epath

from hybrid_ir import config_flags


def define_flags() -> None:
  config_flags.define_config()
  flags.DEFINE_bool("overwrite", False, "Prepare again even where a complete store exists.")
  flags.DEFINE_integer("workers", None, "Processes for preparation (default: all cores).")


def store_bytes(directory: epath.Path) -> int:
  """Bytes of a store (its files and those of its texts/ and index/ folders; works on gs://)."""
  files = [p for d in (directory, directory / "texts", directory / "index") for p in d.glob("*")]
  return sum(p.stat().length for p in files if not p.is_dir())


def prepare(config, *, overwrite: bool = False, workers: int | None = None) -> list[dict]:
  """Prepares (or checks) every source of `config.input`; returns one summary dict per source."""
  from hybrid_ir import data  # pylint: disable=g-import-not-at-top
  out = []
  for cfg in config.input.sources:
    t0 = time.time()
    store = data.open_store(cfg, config.input.get("store_dir"), prepare="auto",
                            overwrite=overwrite, workers=workers)
    row = {"source": cfg.get("name"), "kind": cfg.get("kind"), "groups": store.num_groups,
           "langs": list(store.langs), "bytes": store_bytes(store.directory),
           "seconds": round(time.time() - t0, 1), "store": str(store.directory)}
    print(json.dumps(row), flush=True)
    out.append(row)
  return out


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  prepare(f.config, overwrite=f.overwrite, workers=f.workers or os.cpu_count())


if __name__ == "__main__":
  define_flags()
  config_flags.run(main)
