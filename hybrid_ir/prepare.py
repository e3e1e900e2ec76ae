"""Prepares every training source of a config into its store, once, before training.

  python -m hybrid_ir.prepare --config configs/paper/xlmr_hybrid.py [--overwrite] [--verify]
      [--workers N]

Where stores go: `<input.store_dir>/<name>-<fingerprint>`, where input.store_dir defaults to
$HYBRID_IR_STORES or ~/.cache/hybrid_ir/stores and the fingerprint is of the source files'
contents, settings and kind (not their paths: the same files through a symlink or another
checkout share a store); or the source's `store`, where the config gives one.

For each `config.input.sources` entry it parses the raw files (in parallel over the machine's
cores where the source kind can) into its store, or checks that a store already there was made
from the same data and that its bytes are intact. It prints one line per source: groups,
languages, bytes on disk, seconds. --overwrite prepares again, replacing the store (only ever
a store: anything else at its path is refused). --verify checks every file of every store
against the sha256 recorded at preparation (opening a store checks its indexes and sizes only).

Small sources (the demo, the experiments) are prepared on first use by training as well
(`input.prepare='auto'`); large ones (mMARCO) should be prepared here, and configs for them set
`input.prepare='never'` so that every host of a pod does not start preparing them at once.
See `hybrid_ir.data`.
"""
import json
import os
import sys
import time

from absl import flags
from absl import logging
from etils import epath

from hybrid_ir import config_flags


def define_flags() -> None:
  config_flags.define_config(help_string="the config whose input.sources are prepared, each "
                             "into <input.store_dir>/<name>-<fingerprint of its files' contents> "
                             "(input.store_dir: $HYBRID_IR_STORES, else "
                             "~/.cache/hybrid_ir/stores), or into the source's `store`.")
  flags.DEFINE_bool("overwrite", False, "Prepare again, replacing each source's store "
                    "(<input.store_dir>/<name>-<fingerprint>, or the source's `store`). Only a "
                    "store is ever replaced.")
  flags.DEFINE_bool("verify", False, "Check every file of each store against the sha256 "
                    "recorded when it was prepared (reads the whole store).")
  flags.DEFINE_integer("workers", None, "Processes for preparation (default: all cores).")


def store_bytes(directory: epath.Path) -> int:
  """Bytes of a store (its files and those of its texts/ and index/ folders; works on gs://)."""
  files = [p for d in (directory, directory / "texts", directory / "index") for p in d.glob("*")]
  return sum(p.stat().length for p in files if not p.is_dir())


def prepare(config, *, overwrite: bool = False, verify: bool = False,
            workers: int | None = None) -> list[dict]:
  """Prepares (or checks) every source of `config.input`; returns one summary dict per source.
  With `verify`, every store's files are checked against their recorded sha256s."""
  from hybrid_ir import data  # pylint: disable=g-import-not-at-top
  out = []
  for cfg in config.input.sources:
    t0 = time.time()
    store = data.open_store(cfg, config.input.get("store_dir"), prepare="auto",
                            overwrite=overwrite, workers=workers)
    row = {"source": cfg.get("name"), "kind": cfg.get("kind"), "groups": store.num_groups,
           "langs": list(store.langs), "bytes": store_bytes(store.directory)}
    if verify:
      row["verified_bytes"] = store.verify()
    row.update(seconds=round(time.time() - t0, 1), store=str(store.directory))
    print(json.dumps(row), flush=True)
    out.append(row)
  return out


def main(argv) -> None:
  del argv
  config_flags.require("config", hint="the config whose input.sources to prepare, e.g. "
                       "--config configs/demo.py")
  f = flags.FLAGS
  from hybrid_ir import data  # pylint: disable=g-import-not-at-top
  from hybrid_ir import run_dir  # pylint: disable=g-import-not-at-top
  from hybrid_ir.data import store as store_lib  # pylint: disable=g-import-not-at-top
  # The console shows one line per source; what the preparation logs (and, on an error, its
  # traceback) goes to <stores' folder>/prepare.INFO.
  folder = epath.Path(f.config.input.get("store_dir") or data.DEFAULT_STORE_DIR)
  with run_dir.HeldLog() as log:
    if "://" not in str(folder):
      folder.mkdir(parents=True, exist_ok=True)
      log.to_file("prepare", folder)
  try:
    prepare(f.config, overwrite=f.overwrite, verify=f.verify, workers=f.workers or os.cpu_count())
  except (store_lib.StoreError, ValueError, FileNotFoundError) as e:
    # Bad input or a damaged store: one line that names the file and what to do.
    logging.info("prepare failed", exc_info=True)
    sys.exit(f"hybrid_ir.prepare: error: {e}")


if __name__ == "__main__":
  define_flags()
  config_flags.run(main)
