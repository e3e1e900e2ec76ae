"""The paper's setting (arXiv 2408.10536): XLM-R base, hybrid batches (alpha = beta = 0.5),
batch 100, AdamW lr 3e-5, weight decay 0.01, "Query: "/"Passage: " prefixes, zero-shot on
XQuAD-R and MLQA-R. Needs the user's training data (not reachable on our machines):

  DATA_DIR/squad-mt/<lang>.json   machine-translated QA, SQuAD v1.1/v2.0 format, question ids
                                  shared across languages (the groups of X-Y batches)
  DATA_DIR/mmarco/<lang>.tsv      mMARCO triples: query_id, query, positive_id, positive,
                                  negative_id, negative (tab-separated; hybrid_ir.data.triples)

  python -m hybrid_ir.train --config configs/paper/xlmr_hybrid.py --workdir gs://B/runs/xlmr_hybrid
  python -m hybrid_ir.train --config configs/paper/xlmr_hybrid.py:mono ...   # X-X-mono baseline
  python -m hybrid_ir.train --config configs/paper/xlmr_hybrid.py:cross ...  # X-Y baseline
  launch/run_all.sh --config=configs/paper/xlmr_hybrid.py ...                # on a Cloud TPU

Unstated in the paper, hence knobs here: steps (total_steps), warm-up, maximum lengths (buckets),
temperature, pooling (mean for XLM-R), and whether the InfoNCE denominator holds the other
queries' positives (loss.variant: 'standard' = yes, DPR-style; 'paper' = as printed). Its early
stopping on English SQuADShifts is not reproduced: evaluate checkpoints with hybrid_ir.eval.
"""
import ml_collections

from configs import common

LANGS = ("ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh")  # 9 training languages
MMARCO_LANGS = ("ar", "de", "en", "es", "hi", "ru", "zh")  # mMARCO has 7 of the 9
BATCH_TYPES = {"hybrid": (0.5, 0.5), "mono": (1.0, 0.0), "cross": (0.0, 1.0)}


def get_config(arg: str | None = None, model: str = "hf:FacebookAI/xlm-roberta-base",
               pooling: str = "mean") -> ml_collections.ConfigDict:
  arg = arg or "hybrid"
  if arg not in BATCH_TYPES:
    raise ValueError(f"unknown config arg {arg!r}; known: {sorted(BATCH_TYPES)}")
  mono, cross = BATCH_TYPES[arg]
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 20_000
  c.log_every = 50
  c.eval_every = 0
  c.eval_batch_size = 512
  c.grad_cache_chunks = 0
  c.mesh = dict(data=-1, fsdp=1)
  c.model = ml_collections.ConfigDict(dict(
      name=model, pooling=pooling, dtype="bfloat16", query_prefix="Query: ",
      passage_prefix="Passage: ", buckets=(32, 64, 128, 256)))
  c.optimizer = dict(lr=3e-5, weight_decay=0.01, warmup_steps=1000, decay="linear", grad_clip=1.0)
  c.loss = common.loss()
  c.checkpoint = dict(every=1000, keep=5, async_save=True)
  c.input = dict(
      batch_size=100, seed=0, num_negatives=0, prefetch=4, too_few="drop",
      type_probs=dict(mono=mono, cross=cross, mixed=0.0),
      source_temperature=1.0,  # sources drawn in proportion to their size ("based on dataset size")
      sources=[
          dict(name="squad-mt", kind="squad", path=f"{common.DATA_DIR}/squad-mt", langs=LANGS),
          dict(name="mmarco", kind="triples",
               files={l: f"{common.DATA_DIR}/mmarco/{l}.tsv" for l in MMARCO_LANGS}),
      ])
  c.evals = common.lareqa_evals("xquad-r", "mlqa-r")
  return c
