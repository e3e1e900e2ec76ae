"""The paper's experiments as grids of runs, and the `key=value` arg that names one run.

One run is `configs/experiments/base.py:<arg>`; this module owns what the arg means, so that the
runner (`hybrid_ir.experiments`), the report (`hybrid_ir.report`) and the config file agree on it
without importing each other, and without the library importing `configs/` (which `pip install`
does not install). The config file turns a parsed arg into a ConfigDict and nothing else.

The arg is comma-separated key=value pairs (defaults in DEFAULTS):
  model   use-m3 | e5-small
  train   xquad-r | mlqa-r   (evaluation is on the other set; never on the training set)
  mono, cross, mixed         batch-type probabilities (paper hybrid: mono=0.5, cross=0.5)
  langs   training languages joined by '+', or 'all' (every language of `train` the model covers)
  steps, batch, lr, seed
  size    full | mini        (mini: a tiny random BERT and 3 eval languages, for tests)
The recipe's switches (issue "results that hold up"; each off by default):
  negatives   same-paragraph hard negatives per example (the other sentences of the answer's
              paragraph, LAReQA's distractors)
  bitext      none | lohelp | bible | lohelp+bible: parallel text of ../shared/data/bitext as
              extra sources (translation ranking), sources then drawn uniformly
  symmetric   1: add the passage -> query InfoNCE direction
  learn_temp  1: a learned temperature (from `temp`); temp: the (initial) temperature, 0.05;
              temp_lr: the learned temperature's own peak learning rate (0: lr, the encoder's)
  chunks      GradCache chunks (0: off), for batches larger than memory allows
  table       dense | lazy | frozen: how the token-embedding table is trained
              (optimizer.embedding_update, hybrid_ir.table_update)
  pack        1: training batches packed several texts to a row (input.packing; same
              embeddings from fewer tokens; BERT family)
  curve       points of the parallel-query distance curve measured during training (0: off; the
              ratio experiment measures 10), on held-out questions of the evaluation set
  validation  points of a validation curve (0: off): a fifth of the training set's articles is
              held out of training and measured during training (held-out InfoNCE loss and
              LAReQA mAP, hybrid_ir.evaluators.validation); the runner reports the best step by
              the held-out loss as well as the last
  distill     the weight of the multilingual distillation term (0: off; hybrid_ir.distill): every
              row's query and passage pulled to the frozen initial model's embedding of its
              group's English version (loss.distill: teacher 'initial', pivot 'en')
  distill_only 1: the distillation term alone, InfoNCE left out (needs distill > 0)
  mined       the folder name of a mined store of the training set (`python -m hybrid_ir.mine`
              writes `<store_dir>/mined/<name>-<key>`; give `<name>-<key>`): its negatives
              replace the same-paragraph ones, `negatives` of them per example (needs
              negatives > 0)
  lsar        an LSAR rank (0: off; hybrid_ir.lsar): after training, the runner also evaluates
              the run's checkpoints (or the untrained model) with model.lsar = {rank, source:
              the training set} and saves those results beside the plain ones (`lsar_eval`);
              training itself is unchanged. Below the number of training languages.

Related: `hybrid_ir.experiments` (runs a grid), `hybrid_ir.report` (tables from its summaries).
"""
import dataclasses
import hashlib

from hybrid_ir import models
from hybrid_ir.data import lareqa

DEFAULTS = dict(model="use-m3", train="xquad-r", mono=0.5, cross=0.5, mixed=0.0, langs="all",
                steps=150, batch=32, lr=3e-5, seed=0, size="full", negatives=0, bitext="none",
                symmetric=0, learn_temp=0, temp=0.05, temp_lr=0.0, chunks=0, curve=0, table="dense",
                pack=0, validation=0, distill=0.0, distill_only=0, lsar=0, mined="")
# Short model names of the arg -> `model_config.name`, from the models registry's presets.
MODELS = {short: preset["name"] for short, preset in models.PRESETS.items()}
SIZES = ("full", "mini")
# The recipe's ablation, cumulative: each row adds one ingredient to the row before it.
RECIPE = (("base", {}), ("negatives", dict(negatives=3)), ("bitext", dict(bitext="lohelp+bible")),
          ("symmetric", dict(symmetric=1)), ("learn_temp", dict(learn_temp=1)),
          ("longer", dict(steps=600)))
# One ingredient at a time on top of the base run (hybrid batches, 150 steps, lr 3e-5, temperature
# .05), each paired against the base: what each is worth alone, where RECIPE's cumulative rows
# carry every earlier ingredient (and its cost) along.
INGREDIENTS = (("lr1e-4", dict(lr=1e-4)), ("temp0.02", dict(temp=0.02)),
               ("temp0.01", dict(temp=0.01)), ("bitext", dict(bitext="lohelp+bible")),
               ("symmetric", dict(symmetric=1)), ("negatives", dict(negatives=3)),
               ("steps300", dict(steps=300)))
STRATEGIES = {"mono": (1.0, 0.0, 0.0), "cross": (0.0, 1.0, 0.0), "hybrid": (0.5, 0.5, 0.0)}
# languages_v2: the e5 recipe's temperature and packing (configs/recipe.py) without its bitext, so
# that the training languages are exactly the chosen ones; run with the recipe's --steps 300
# --batch 32 (a fixed budget at every k). One hybrid run at k = 11 trains SCALING_LONG steps.
SCALING_ARGS = dict(temp=0.02, pack=1)
SCALING_STEPS = 300
SCALING_LONG = 2 * SCALING_STEPS
# Training-set sizes k per training set (MLQA-R has 7 languages), and the training seeds of k = all.
SCALING_KS = {"xquad-r": (2, 4, 7, 11), "mlqa-r": (2, 4, 7)}
SCALING_SEEDS = {"xquad-r": (0, 1), "mlqa-r": (0,)}
PIVOT = "en"  # every language set keeps it (the paper's pivot language)
# The methods comparison (issue "hybrid batching against the other ways to align languages").
# Every run: the e5 recipe's temperature, no bitext (the Bible has verses without an English
# version, which the distillation term refuses, and parallel text is itself an alignment method
# that every row would carry), a validation fold measured 10 times (best and last checkpoint),
# and LSAR evaluated besides the plain model. Packing (the recipe's pack=1) changes no loss, only
# the speed, and only BERT-family encoders take it: give it with --set pack=1 for e5-small.
METHODS_ARGS = dict(temp=0.02, validation=10, lsar=4)
# LSAR rank 4: one rank for every run, the largest that every direction allows for both models
# (USE-m3 trains MLQA-R on 5 languages, ar de en es zh: rank < 5), that is that case's whole
# span of language means.
# Distillation weight 10: the two terms' values are alike (2 - 2cos is about .45 between USE-m3's
# translations, InfoNCE .1-3), but their gradients are not: InfoNCE's on an embedding carries
# 1 / temperature = 50, the term's is 2 (s - t), about 1.3. At weight 1 the term hardly moved
# (USE-m3, X-Y batches: .449 -> .411 in 150 steps; results/use_m3/methods_distill_w1/); at 10 the
# two gradients are of one order. (Adam makes a term alone, distill_only, indifferent to it.)
DISTILL = dict(distill=10.0)
# Distillation alone draws hybrid batches: with InfoNCE off, the mix only decides which language
# versions of a group the rows hold.
METHODS = (("hybrid", dict(mono=0.5, cross=0.5, mixed=0.0)),
           ("hybrid-distill", dict(mono=0.5, cross=0.5, mixed=0.0, **DISTILL)),
           ("mono-distill", dict(mono=1.0, cross=0.0, mixed=0.0, **DISTILL)),
           ("distill", dict(mono=0.5, cross=0.5, mixed=0.0, distill_only=1, **DISTILL)))
# Training seeds per direction, and the order in which (direction, seed) blocks run: every method
# of a block before the next block, so a grid stopped early has whole blocks.
METHODS_SEEDS = {"xquad-r": (0, 1, 2), "mlqa-r": (0, 1)}
METHODS_ORDER = (("xquad-r", 0), ("xquad-r", 1), ("mlqa-r", 0), ("xquad-r", 2), ("mlqa-r", 1))
# The LSAR rank sweep: the untrained model with 1, 2, 4, ... directions removed, up to every
# direction the training set's languages span (its number of languages minus one). A model that
# lacks some of them (USE-m3: el, hi, vi) spans fewer: its runs above that are refused before
# any run starts; leave them out with --only.
LSAR_RANKS = {"xquad-r": (1, 2, 4, 7, 10), "mlqa-r": (1, 2, 4, 6)}


def parse(arg: str | None) -> dict:
  """'k=v,k=v' -> DEFAULTS updated, with each value converted to its default's type."""
  out = dict(DEFAULTS)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in DEFAULTS:
      raise ValueError(f"config arg {item!r}: expected key=value with key in {sorted(DEFAULTS)}")
    out[key] = type(DEFAULTS[key])(value)
  if out["train"] not in lareqa.LANGS:
    raise ValueError(f"train={out['train']!r}; known: {sorted(lareqa.LANGS)}")
  if out["model"] not in MODELS:
    raise ValueError(f"model={out['model']!r}; known: {tuple(MODELS)}")
  if out["size"] not in SIZES:
    raise ValueError(f"size={out['size']!r}; known: {', '.join(SIZES)}")
  if out["distill_only"] and not out["distill"] > 0:
    raise ValueError(f"distill_only={out['distill_only']} needs distill=<weight> > 0 (got "
                     f"distill={out['distill']:g}): with InfoNCE left out nothing would train")
  if out["mined"] and (not out["negatives"] > 0 or "/" in out["mined"]):
    raise ValueError(f"mined={out['mined']!r}: give the mined store's folder name "
                     "(<name>-<key>, in <store_dir>/mined/) and negatives=<K> > 0 (got "
                     f"negatives={out['negatives']})")
  if out["distill"] < 0 or out["lsar"] < 0:
    raise ValueError(f"distill={out['distill']:g}, lsar={out['lsar']}: must be >= 0 (0: off)")
  return out


def train_langs(a: dict) -> tuple[str, ...]:
  """The training languages of a parsed arg; 'all' leaves out those the model does not cover
  (USE-m3: el, hi, vi), since fine-tuning on them would teach a tokenizer it never learnt."""
  available = lareqa.LANGS[a["train"]]
  if a["langs"] == "all":
    uncovered = models.UNCOVERED_LANGS.get(MODELS[a["model"]], ())
    return tuple(l for l in available if l not in uncovered)
  langs = tuple(a["langs"].split("+"))
  unknown = [l for l in langs if l not in available]
  if unknown:
    raise ValueError(f"langs {unknown} are not in {a['train']}; available: {available}")
  return langs


def lsar_eval(a: dict) -> dict | None:
  """The `model.lsar` the runner evaluates a run with besides the plain model, or None (lsar=0).

  Inputs: a parsed arg. The subspace is estimated from the training source only (its name is
  the training set's, as configs/experiments/base.py names it), in the languages the run trains
  on; its centred language means span at most len(train_langs) - 1 directions, so a rank of the
  number of training languages or more is refused here, naming them, before anything trains.
  Related: hybrid_ir.lsar (the math and the config's checks), hybrid_ir.experiments (the runner).
  """
  if not a["lsar"]:
    return None
  langs = train_langs(a)
  if a["lsar"] >= len(langs):
    raise ValueError(f"lsar={a['lsar']}: an LSAR rank must be below the number of training "
                     f"languages, {len(langs)} ({'+'.join(langs)} of {a['train']} for "
                     f"{a['model']}); at most {len(langs) - 1}")
  return dict(rank=a["lsar"], source=a["train"])


def evaluated_on(a: dict) -> str:
  """The LAReQA set a run is evaluated on: the one it does not train on."""
  return "mlqa-r" if a["train"] == "xquad-r" else "xquad-r"


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a grid: its name (the summary's file name) and its arg's key=values."""
  name: str
  args: dict
  pretrained: bool = False  # evaluate the untrained model instead of training

  def config_arg(self, common: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in {**common, **self.args}.items())


def _mix(mono, cross, mixed=0.0) -> dict:
  return dict(mono=mono, cross=cross, mixed=mixed)


def language_sets(available, k: int, seed: int = 0) -> tuple[tuple[str, ...], ...]:
  """The training-language sets of size `k` that the languages_v2 grid trains on.

  Inputs: `available`, the languages of the training set (e.g. lareqa.LANGS['xquad-r']); `k`, from
  2 (en and one other, the fewest that make X-Y batches) to len(available); `seed`, the rule's seed.
  The rule: every set holds en. The other languages are ordered by the SHA-256 hex digest of
  f"{seed}:{k}:{lang}" (a fixed pseudo-random shuffle, drawn afresh for each k, that needs no
  random-number library and so never changes between library versions); set 0 is en plus the
  first k - 1 of that order, set 1 en plus the last k - 1. So the two sets always differ for
  k < len(available), share nothing but en when 2 (k - 1) <= len(available) - 1, and k =
  len(available) gives the one set of every language. Each set is in `available`'s order.
  Used by `runs('languages_v2')`; a pure function, so the report and the tests recompute it.
  """
  available = tuple(available)
  if PIVOT not in available:
    raise ValueError(f"language sets keep {PIVOT!r}, which is not among {available}")
  if not 2 <= k <= len(available):
    raise ValueError(f"k={k}: a language set holds 2 to {len(available)} languages")
  others = sorted((l for l in available if l != PIVOT),
                  key=lambda l: hashlib.sha256(f"{seed}:{k}:{l}".encode()).hexdigest())
  picks = [others[:k - 1]] if k == len(available) else [others[:k - 1], others[-(k - 1):]]
  return tuple(tuple(l for l in available if l == PIVOT or l in p) for p in picks)


def _scaling_runs(train: str) -> list[Run]:
  """languages_v2's runs trained on `train`, in the order that answers most if the grid stops
  early: every strategy at the smallest and the largest k (set 0, seed 0); then the middle sizes
  (set 0); then each k's second language set; then the other training seeds at k = all; then, on
  XQuAD-R, hybrid at k = all with SCALING_LONG steps (does the budget limit the large-k end?)."""
  ks, n = SCALING_KS[train], len(lareqa.LANGS[train])
  sets = {k: language_sets(lareqa.LANGS[train], k) for k in ks}

  def run(strategy, k, index=0, seed=0, **extra):
    name = f"{train}-{strategy}-k{k}" + (f"-set{index}" if k < n else "")
    name += (f"-seed{seed}" if seed else "") + (f"-steps{extra['steps']}" if extra else "")
    args = dict(train=train, langs="+".join(sets[k][index]), **_mix(*STRATEGIES[strategy]),
                **SCALING_ARGS, **extra)
    return Run(name, dict(args, seed=seed) if seed else args)

  order = [(k, 0, 0) for k in (ks[0], ks[-1])] + [(k, 0, 0) for k in ks[1:-1]]
  order += [(k, 1, 0) for k in ks if len(sets[k]) > 1]
  order += [(ks[-1], 0, s) for s in SCALING_SEEDS[train][1:]]
  out = [run(strategy, k, i, s) for k, i, s in order for strategy in STRATEGIES]
  if train == "xquad-r":
    out.append(run("hybrid", ks[-1], steps=SCALING_LONG))
  return out


def seed_of(run_name: str) -> tuple[str, int]:
  """('xquad-r-mono', 2) for 'xquad-r-mono-seed2'; seed 0 keeps the plain name."""
  base, sep, seed = run_name.rpartition("-seed")
  return (base, int(seed)) if sep and seed.isdigit() else (run_name, 0)


def with_seeds(grid: list[Run], seeds=(0,)) -> list[Run]:
  """Every trained run once per training seed (`<name>-seed<k>`; seed 0 keeps `<name>`, so
  one-seed results stay valid); the untrained runs once. Each seed changes the model's and the
  batches' randomness (config seed and input seed)."""
  out = []
  for run in grid:
    if run.pretrained:
      out.append(run)
      continue
    for s in seeds:
      out.append(run if s == 0 else Run(f"{run.name}-seed{s}", dict(run.args, seed=int(s))))
  return out


def _strategies(directions) -> list[Run]:
  out = []
  for train in directions:
    out.append(Run(f"{train}-pretrained", dict(train=train), pretrained=True))
    out += [Run(f"{train}-{s}", dict(train=train, **_mix(*p))) for s, p in STRATEGIES.items()]
  return out


def _ratio(directions) -> list[Run]:
  out = [Run("pretrained", dict(train="xquad-r"), pretrained=True)]
  out += [Run(f"alpha{a:g}", dict(train="xquad-r", curve=10, **_mix(a, 1 - a)))
          for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
  out += [Run(f"mixed{m:g}", dict(train="xquad-r", curve=10,
                                  **_mix((1 - m) / 2, (1 - m) / 2, m)))
          for m in (0.5, 1.0)]
  return out


def _languages(directions) -> list[Run]:
  # Nested subsets, English first; one language cannot make X-Y batches, so it trains mono.
  subsets = {1: "en", 2: "en+de", 4: "en+de+ar+zh", "all": "all"}
  out = [Run("pretrained", dict(train="xquad-r"), pretrained=True)]
  for n, langs in subsets.items():
    mix = _mix(1.0, 0.0) if n == 1 else _mix(0.5, 0.5)
    out.append(Run(f"langs{n}", dict(train="xquad-r", langs=langs, **mix)))
  return out


def _recipe(directions) -> list[Run]:
  out = [Run("pretrained", dict(train="xquad-r"), pretrained=True)]
  args = dict(train="xquad-r", **_mix(0.5, 0.5))
  for i, (ingredient, change) in enumerate(RECIPE, 1):
    args = dict(args, **change)
    out.append(Run(f"recipe{i}-{ingredient}", dict(args)))
  return out


def _ingredients(directions) -> list[Run]:
  base = dict(train="xquad-r", **_mix(0.5, 0.5))
  out = [Run("pretrained", dict(train="xquad-r"), pretrained=True), Run("base", base)]
  return out + [Run(ingredient, dict(base, **change)) for ingredient, change in INGREDIENTS]


def _table(directions) -> list[Run]:
  out = [Run("pretrained", dict(train="xquad-r"), pretrained=True)]
  return out + [Run(f"table-{mode}", dict(train="xquad-r", table=mode, **_mix(0.5, 0.5)))
                for mode in ("dense", "lazy", "frozen")]


def _languages_v2(directions) -> list[Run]:
  return [r for train in ("xquad-r", "mlqa-r") if train in directions
          for r in _scaling_runs(train)]


def _methods(directions) -> list[Run]:
  """Per training set in `directions`, in METHODS_ORDER's blocks: the untrained model (with its
  set's first block), then every METHODS row at that block's seed (with_seeds' names)."""
  out = []
  for train, seed in METHODS_ORDER:
    if train not in directions or seed not in METHODS_SEEDS[train]:
      continue
    if seed == METHODS_SEEDS[train][0]:
      out.append(Run(f"{train}-pretrained", dict(train=train, **METHODS_ARGS), pretrained=True))
    out += with_seeds([Run(f"{train}-{method}", dict(train=train, **METHODS_ARGS, **change))
                       for method, change in METHODS], (seed,))
  return out


def _lsar(directions) -> list[Run]:
  """Per training set in `directions`: the untrained model evaluated plain and with LSAR at each
  of LSAR_RANKS (the subspace estimated from that training set, evaluated on the other)."""
  return [Run(f"{train}-pretrained-lsar{r}", dict(train=train, lsar=r), pretrained=True)
          for train in directions for r in LSAR_RANKS[train]]


# Experiment name -> the function that builds its grid (one per experiment, as `runs` lists).
_GRIDS = {"strategies": _strategies, "ratio": _ratio, "languages": _languages,
          "recipe": _recipe, "ingredients": _ingredients, "table": _table,
          "languages_v2": _languages_v2, "methods": _methods, "lsar": _lsar}
EXPERIMENTS = tuple(_GRIDS)
# Grids whose runs carry their own training seeds: --seeds must stay 0 for them.
OWN_SEEDS = ("languages_v2", "methods")


def runs(name: str, directions=("xquad-r", "mlqa-r")) -> list[Run]:
  """The grid of experiment `name` (one of EXPERIMENTS), in the order its report lists runs.

  strategies  X-X-mono vs X-Y vs hybrid (alpha = 0.5) per training set in `directions`, each
              with the untrained model.
  ratio       alpha in {0, .25, .5, .75, 1} (cross = 1 - alpha) and mixed-batch fractions, trained
              on XQuAD-R, evaluated on MLQA-R.
  languages   1, 2, 4 and all training languages (nested, English first), hybrid batches.
  recipe      hybrid batches with the recipe's ingredients added one by one (RECIPE), trained
              on XQuAD-R, evaluated on MLQA-R; the report pairs each row with the one before.
  ingredients hybrid batches with one ingredient at a time (INGREDIENTS) on top of the base run,
              trained on XQuAD-R, evaluated on MLQA-R; the report pairs each with the base.
  table       hybrid batches with the token-embedding table updated densely (exact AdamW),
              lazily or not at all (hybrid_ir.table_update), trained on XQuAD-R, evaluated on
              MLQA-R: what the faster updates cost in mAP.
  languages_v2 X-X-mono, X-Y and hybrid at k = 2, 4, 7 and 11 training languages of XQuAD-R
              (evaluated on MLQA-R), with the e5 recipe's temperature and packing but no bitext
              (SCALING_ARGS) at one budget: two language sets per k < 11 (`language_sets`), two
              training seeds at k = 11, and one hybrid k = 11 run at twice the steps. With
              'mlqa-r' in `directions`, then the same on MLQA-R (k = 2, 4, 7; one seed),
              evaluated on XQuAD-R. Order: `_scaling_runs`.
  methods     hybrid against the other ways to align languages, per training set in
              `directions`: hybrid; hybrid + distillation; X-X-mono + distillation;
              distillation alone; the untrained model; every run with LSAR evaluated as well and
              a validation fold (best and last checkpoint; METHODS_ARGS). 3 training seeds on
              XQuAD-R, 2 on MLQA-R, in METHODS_ORDER's blocks.
  lsar        the untrained model with language-subspace removal at LSAR_RANKS (1 direction
              up to every one the training set's languages span), per training set in
              `directions`: which rank to use, before any training.
  """
  if name not in _GRIDS:
    raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
  return _GRIDS[name](directions)

