"""One training run of an experiment: hybrid-batch fine-tuning on one LAReQA set, zero-shot
evaluation on the other. `python -m hybrid_ir.experiments <name>` runs a grid of these; one run is

  python -m hybrid_ir.train --config 'configs/experiments/base.py:train=xquad-r,mono=0.5,cross=0.5' \
      --workdir workdirs/x
  python -m hybrid_ir.eval  --config 'configs/experiments/base.py:train=xquad-r,mono=0.5,cross=0.5' \
      --workdir workdirs/x --once

The arg is comma-separated key=value pairs: model, train, mono/cross/mixed, langs, steps, batch,
lr, seed, size; `hybrid_ir.grids` documents them and owns their parsing (the runner and the report
read the same arg). validation=<points> holds a fold of the training set's articles out of
training and measures it <points> times during training (`hybrid_ir.evaluators.validation`);
the experiment runner then reports the best step by its loss as well as the last
(`config.selection`). distill=<weight> adds the multilingual distillation term (loss.distill,
teacher: the initial model, pivot: en; distill_only=1 leaves InfoNCE out). lsar=<rank> changes
nothing here: the experiment runner evaluates the run with model.lsar as well
(`grids.lsar_eval`, checked here so that a bad rank fails before training).
mined=<name>-<key>,negatives=<K> trains on K negatives per example from a store that
`python -m hybrid_ir.mine` wrote into <store_dir>/mined/. USE-m3 was never trained on el, hi, vi: with model=use-m3, langs=all leaves
them out of training.
"""
import ml_collections

from configs import common
from hybrid_ir import grids
from hybrid_ir.grids import DEFAULTS, parse, train_langs  # noqa: F401  (this config's arg)


# ../shared/data/bitext: the languages of each file (its README).
BITEXT_LANGS = {"lohelp": ("de", "el", "en", "es", "hi", "ru", "tr", "vi", "zh"),
                "bible": ("ar", "de", "en", "es", "ru", "vi")}


# The held-out fold of `validation`: a fifth of the training set's articles, the same for every
# run, seed and batch mix, so their selected checkpoints are chosen on the same questions.
VALIDATION_FOLD = dict(num_folds=5, fold=0, split_seed=0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse(arg)
  evaluate_on = grids.evaluated_on(a)
  c = ml_collections.ConfigDict()
  c.seed = a["seed"]
  c.total_steps = a["steps"]
  c.log_every = max(1, min(10, a["steps"] // 10))
  c.eval_every = 0
  c.eval_batch_size = 128
  c.mesh = dict(data=-1, fsdp=1)
  c.model = common.model(a["model"])
  c.optimizer = dict(lr=a["lr"], weight_decay=0.01, warmup_steps=max(1, a["steps"] // 10),
                     decay="linear", grad_clip=1.0, embedding_update=a.get("table", "dense"))
  # The recipe's switches (hybrid_ir.grids); .get keeps configs of older args loadable.
  c.loss = common.loss(symmetric=bool(a.get("symmetric", 0)),
                       learn_temperature=bool(a.get("learn_temp", 0)),
                       temperature=float(a.get("temp", 0.05)),
                       temperature_lr=float(a.get("temp_lr", 0.0)))
  if float(a.get("distill", 0.0)):
    c.loss.distill = dict(weight=float(a["distill"]), only=bool(a.get("distill_only", 0)),
                          teacher="initial", pivot="en")
  grids.lsar_eval(a)  # raises for a rank the training languages cannot carry
  c.grad_cache_chunks = int(a.get("chunks", 0))
  # Every 50 steps too: a run killed on a shared machine (e.g. out of memory) resumes from there,
  # bit-exact, instead of from step 0; one kept, so no more disk.
  c.checkpoint = dict(every=min(a["steps"], 50), keep=1, async_save=True)
  c.input = dict(batch_size=a["batch"], seed=a["seed"], prefetch=2, store_dir=common.STORE_DIR,
                 packing=bool(a.get("pack", 0)),
                 too_few="error", type_probs=dict(mono=a["mono"], cross=a["cross"], mixed=a["mixed"]),
                 sources=[dict(name=a["train"], kind="squad", path=f"{common.DATA_DIR}/{a['train']}",
                               langs=train_langs(a), num_negatives=int(a.get("negatives", 0)))])
  if a.get("mined"):  # hybrid_ir.mine's store of the same data: its negatives, same texts
    c.input.sources[0]["store"] = f"{common.STORE_DIR}/mined/{a['mined']}"
  bitext = [b for b in a.get("bitext", "none").split("+") if b != "none"]
  for name in bitext:
    if name not in BITEXT_LANGS:
      raise ValueError(f"bitext={a['bitext']!r}: {name!r} is not one of {sorted(BITEXT_LANGS)}")
    c.input.sources.append(dict(name=name, kind="bitext",
                                paths=[f"{common.DATA_DIR}/bitext/{name}.tsv.gz"],
                                langs=[l for l in train_langs(a) if l in BITEXT_LANGS[name]]))
  if bitext:
    c.input.source_temperature = 1e6  # ~uniform over sources: bitext has 25x XQuAD-R's groups
  c.evals = common.lareqa_evals(evaluate_on)
  if a["size"] == "mini":
    # A tiny random BERT with the e5 tokenizer: for the experiment tests, seconds per run.
    c.model = common.model("mini")
    c.eval_batch_size = 256
    c.evals = common.lareqa_evals(evaluate_on, langs=("de", "en", "zh"))
  curve, validation = int(a.get("curve", 0)), int(a.get("validation", 0))
  if curve:
    # The convergence curve: parallel-query distance on held-out questions, during training.
    c.evals.parallel = dict(type="parallel", dataset=evaluate_on, data_dir=common.DATA_DIR,
                            langs=c.evals[evaluate_on].langs, max_questions=200)
  if validation:
    # Model selection on held-out data (the paper stopped early on a validation loss): training
    # leaves out one fold of whole articles of its LAReQA set, linked across languages, and the
    # validation evaluator measures that fold (InfoNCE with the training temperature, LAReQA
    # mAP) from the source config alone, never from the evaluation set.
    c.input.sources[0].update(split="train", **VALIDATION_FOLD)
    c.evals.validation = dict(type="validation", source=dict(c.input.sources[0]),
                              batch_size=a["batch"], num_batches=8,
                              temperature=c.loss.temperature, symmetric=c.loss.symmetric, seed=0)
    # The step the experiment runner reports besides the last, and the checkpoint the trainer
    # keeps for it (checkpoint.make_manager(keep_best=...)); every evaluated step is saved.
    c.selection = dict(metric="validation/loss", mode="min")
  points = max(curve, validation)
  if points:
    c.eval_every = max(1, a["steps"] // points)
    c.train_evals = [n for n, on in (("parallel", curve), ("validation", validation)) if on]
  if validation:
    c.checkpoint.every = c.eval_every
  return c
