"""Export for serving: our encoder vs the exported directory loaded by sentence-transformers (torch).

Covers the bundled e5-small (pretrained), tiny random XLM-R / BERT+pooler snapshots fine-tuned into
an Orbax checkpoint (the checkpoint path, XLM-R position ids, CLS and LaBSE-style pooler pooling),
the CLI, and the refusals (USE-m3, non-empty output, missing step).
"""
import json
import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from hybrid_ir import checkpoint
from hybrid_ir import export
from hybrid_ir import models
from hybrid_ir.models import weights

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

REPO = pathlib.Path(__file__).resolve().parents[1]

# 12 languages and scripts, plus one text longer than the largest bucket (truncation must agree).
TEXTS = [
    "Wie alt ist der Eiffelturm?", "The cat sat on the mat.", "¿Dónde está la biblioteca?",
    "东京是日本的首都。", "Москва — столица России.", "ما هي عاصمة مصر؟",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.", "दिल्ली भारत की राजधानी है।",
    "Hà Nội là thủ đô của Việt Nam.", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "İstanbul Türkiye'nin en kalabalık şehridir.", "東京タワーは何メートルですか？",
    " ".join(["a very long passage about rivers and mountains"] * 40),
]


def assert_same_embeddings(encoder, params, out_dir, texts=TEXTS):
  """Loads out_dir with sentence-transformers; cosine >= 0.9999 per text, for both prompts."""
  model = sentence_transformers.SentenceTransformer(str(out_dir), device="cpu")
  for kind in ("query", "passage"):
    ours = encoder.encode(params, texts, kind, batch_size=16, progress=False)
    theirs = model.encode(texts, prompt_name=kind, convert_to_numpy=True, batch_size=16)
    cos = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999, (kind, cos)
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)
    # Prompts are applied by sentence-transformers exactly as our prefixes.
    assert model.prompts[kind] == encoder.tokenizer.prefixes[kind]
  return model


# ------------------------------------------------------------------------------------------------
# Bundled e5-small, pretrained.
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def e5(tmp_path_factory):
  from configs import common
  # export_encoder on the loaded encoder: one e5 load instead of two (export(pretrained=True) is
  # covered on a tiny model in test_cli_exports_a_chosen_step).
  encoder = models.load_encoder(common.model("e5-small"))
  return encoder, export.export_encoder(encoder, encoder.params, tmp_path_factory.mktemp("e5"))


def test_e5_export_matches_sentence_transformers(e5):
  encoder, out = e5
  assert_same_embeddings(encoder, encoder.params, out)


def test_e5_export_files(e5):
  encoder, out = e5
  assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
  prompts = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
  assert prompts == {"query": "query: ", "passage": "passage: "}
  cfg = json.loads((out / "config.json").read_text())
  assert (cfg["model_type"], cfg["architectures"]) == ("bert", ["BertModel"])
  # The tokenizer alone (transformers, not sentence-transformers) gives our ids, incl. truncation.
  tok = transformers.AutoTokenizer.from_pretrained(str(out))
  ours = encoder.tokenizer.encode_ids(TEXTS, "query")
  theirs = tok(["query: " + t for t in TEXTS], truncation=True, max_length=128)["input_ids"]
  assert theirs == ours
  assert max(map(len, ours)) == 128  # the long text really was truncated


# ------------------------------------------------------------------------------------------------
# Tiny random snapshots -> Orbax checkpoint -> export.
# ------------------------------------------------------------------------------------------------

def tiny_tokenizer(kind: str):
  """A ~300-piece tokenizer trained on TEXTS: XLM-R style (Unigram, <s> .. </s>, <pad> = 1) or
  BERT style (WordPiece, [CLS] .. [SEP], [PAD] = 0); small, so every load takes milliseconds."""
  from tokenizers import Tokenizer, decoders, models as tm, normalizers, pre_tokenizers
  from tokenizers import processors, trainers
  corpus = TEXTS + ["Query: ", "Passage: "]
  if kind == "xlmr":
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(tm.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
    cls, sep = "<s>", "</s>"
  else:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(tm.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials)
    cls, sep = "[CLS]", "[SEP]"
  tok.train_from_iterator(corpus, trainer)
  tok.post_processor = processors.TemplateProcessing(
      single=f"{cls} $A {sep}", special_tokens=[(cls, tok.token_to_id(cls)),
                                                (sep, tok.token_to_id(sep))])
  return tok


def tiny_snapshot(tmp_path: pathlib.Path, kind: str) -> pathlib.Path:
  """A random HF snapshot dir: XLM-R, or BERT with a (LaBSE-style) pooler, and its tokenizer."""
  tok = tiny_tokenizer(kind)
  assert tok.get_vocab_size() <= 320
  size = dict(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=160)
  torch.manual_seed(0)
  if kind == "xlmr":
    model = transformers.XLMRobertaModel(
        transformers.XLMRobertaConfig(**size, pad_token_id=1, type_vocab_size=1),
        add_pooling_layer=False)
  else:
    model = transformers.BertModel(transformers.BertConfig(**size, pad_token_id=0),
                                   add_pooling_layer=True)
  path = tmp_path / f"snapshot_{kind}"
  model.save_pretrained(path, safe_serialization=True)
  tok.save(str(path / "tokenizer.json"))
  return path


def fine_tune_checkpoint(encoder, workdir: pathlib.Path, config, step: int):
  """Params perturbed away from the snapshot (incl. LayerNorms, biases, pooler), saved by Orbax."""
  leaves, treedef = jax.tree.flatten(encoder.params)
  rng = np.random.default_rng(step)
  new = [x + 0.05 * rng.standard_normal(x.shape).astype(np.float32) for x in leaves]
  params = jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in new])
  manager = checkpoint.make_manager(workdir, async_save=False)
  checkpoint.save(manager, step, {"params": params, "step": np.int32(step)}, {"pos": step},
                  config, force=True)
  manager.wait_until_finished()
  manager.close()
  return params


@pytest.mark.parametrize("kind,pooling", [("xlmr", "mean"), ("xlmr", "cls"), ("bert", "pooler")])
def test_checkpoint_export_matches_sentence_transformers(tmp_path, kind, pooling):
  config = ml_collections.ConfigDict({"model": dict(
      name=str(tiny_snapshot(tmp_path, kind)), pooling=pooling, query_prefix="Query: ",
      passage_prefix="Passage: ", buckets=(16, 32, 64, 128))})
  encoder = models.load_encoder(config.model)
  old = fine_tune_checkpoint(encoder, tmp_path / "wd", config, step=3)
  params = fine_tune_checkpoint(encoder, tmp_path / "wd", config, step=7)
  out = export.export(config, tmp_path / "st", workdir=tmp_path / "wd")  # latest: step 7
  model = assert_same_embeddings(encoder, params, out)
  # The exported weights are step 7's: not the snapshot's, nor step 3's.
  theirs = model.encode(TEXTS[:4], prompt_name="query", convert_to_numpy=True)
  for other in (encoder.params, old):
    assert ((encoder.encode(other, TEXTS[:4], "query", progress=False) * theirs).sum(1)
            < 0.999).all()
  cfg = json.loads((out / "config.json").read_text())
  assert cfg["model_type"] == ("xlm-roberta" if kind == "xlmr" else "bert")
  assert (out / "2_Dense").is_dir() == (pooling == "pooler")
  ids = transformers.AutoTokenizer.from_pretrained(str(out))(
      ["Query: " + t for t in TEXTS], truncation=True, max_length=128)["input_ids"]
  assert ids == encoder.tokenizer.encode_ids(TEXTS, "query")


def test_cli_exports_a_chosen_step(tmp_path):
  snap = tiny_snapshot(tmp_path, "xlmr")
  cfg_file = tmp_path / "tiny_config.py"
  cfg_file.write_text(
      "import ml_collections\n\ndef get_config(arg=None):\n"
      f"  return ml_collections.ConfigDict({{'model': dict(name={str(snap)!r}, pooling='mean')}})\n")
  config = ml_collections.ConfigDict({"model": dict(name=str(snap), pooling="mean")})
  encoder = models.load_encoder(config.model)
  params = fine_tune_checkpoint(encoder, tmp_path / "wd", config, step=5)
  fine_tune_checkpoint(encoder, tmp_path / "wd", config, step=9)
  out = tmp_path / "st"
  out.mkdir()
  (out / "stale.txt").write_text("x")
  cmd = [sys.executable, "-m", "hybrid_ir.export", f"--config={cfg_file}",
         f"--workdir={tmp_path / 'wd'}", f"--out={out}", "--step=5", "--overwrite"]
  r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert r.returncode != 0 and "does not look like an export" in r.stderr
  assert (out / "stale.txt").exists()  # --overwrite never deletes a foreign directory
  (out / "stale.txt").unlink()
  r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "step 5 of" in (out / "README.md").read_text()
  assert_same_embeddings(encoder, params, out, TEXTS[:4])
  # Without --overwrite an existing export is kept; a missing step names the finished ones.
  with pytest.raises(FileExistsError, match="not empty"):
    export.export(config, out, workdir=tmp_path / "wd")
  with pytest.raises(FileNotFoundError, match=r"finished steps: \[5, 9\]"):
    export.export(config, tmp_path / "st2", workdir=tmp_path / "wd", step=4)
  out = export.export(config, tmp_path / "pretrained", pretrained=True)
  assert_same_embeddings(encoder, encoder.params, out, TEXTS[:4])


# ------------------------------------------------------------------------------------------------
# Refusals.
# ------------------------------------------------------------------------------------------------

def test_use_m3_is_refused(tmp_path):
  from configs import common
  config = ml_collections.ConfigDict({"model": common.model("use-m3")})
  with pytest.raises(ValueError, match="not a HF / sentence-transformers architecture"):
    export.export(config, tmp_path / "out", pretrained=True)
  assert not (tmp_path / "out").exists()


def test_needs_exactly_one_source(tmp_path):
  config = ml_collections.ConfigDict({"model": dict(name="bundled:e5-small")})
  with pytest.raises(ValueError, match="exactly one of workdir"):
    export.export(config, tmp_path / "out")
  with pytest.raises(ValueError, match="exactly one of workdir"):
    export.export(config, tmp_path / "out", workdir=tmp_path, pretrained=True)


def test_hf_tensors_rejects_unmapped_params():
  from hybrid_ir.models import encoder as encoder_lib
  cfg = encoder_lib.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=16)
  params = weights._bert_shapes(cfg)
  params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), params)
  assert len(export.hf_tensors(cfg, params)) == len(weights.hf_name_map(cfg))
  params["extra"] = {"kernel": np.zeros((2, 2), np.float32)}
  with pytest.raises(ValueError, match="extra/kernel"):
    export.hf_tensors(cfg, params)


# ------------------------------------------------------------------------------------------------
# The model card and the console, from a real training run, its evaluation and the binary.
# ------------------------------------------------------------------------------------------------

def test_model_card_from_a_trained_and_evaluated_checkpoint(tmp_path):
  """The tiny test config trained 2 steps and evaluated on XQuAD-R en/de; the export's console,
  files, card and load."""
  config = tmp_path / "config.py"
  config.write_text(
      f"import sys\nsys.path.insert(0, {str(REPO / 'tests')!r})\nsys.path.insert(0, {str(REPO)!r})\n"
      "import configs_test_train as base\nfrom configs import common\n\n"
      "def get_config(arg=None):\n  c = base.get_config(arg)\n  c.total_steps = 2\n"
      "  c.log_every = 1\n  c.checkpoint.every = 2\n  c.eval_batch_size = 64\n"
      "  c.evals = common.lareqa_evals('xquad-r', langs=('en', 'de'))\n  return c\n")
  # As a user runs it: JAX probes its backends (the tests' conftest names the CPU).
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  wd, out = tmp_path / "w", tmp_path / "exported" / "tiny"
  for args in (["hybrid_ir.train", "--workdir", str(wd)],
               ["hybrid_ir.eval", "--workdir", str(wd), "--once"]):
    r = subprocess.run([sys.executable, "-m", *args, "--config", str(config)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
  report = json.loads((wd / "eval" / "step_2.json").read_text())
  r = subprocess.run([sys.executable, "-m", "hybrid_ir.export", "--config", str(config),
                      "--workdir", str(wd), "--out", str(out)], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  # The console: export's one line; the backend probe and Orbax went to the log.
  assert r.stdout == f"exported to {out}\n"
  assert r.stderr == ""
  log = (out.parent / "export.INFO").read_text()
  assert "Unable to initialize backend" in log and "exported random_init" in log
  # Every file world-readable.
  assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()} == {"0o644"}
  card = (out / "README.md").read_text()
  m = report["metrics"]
  for line in (
      "# random_init (fine-tuned, step_2), exported by hybrid_ir",
      "- Base model: `random_init`",
      "- Pooling: mean, then L2 normalisation; max_seq_length 64; prompts {'query': '', "
      "'passage': ''}; similarity: cosine",
      f"- Checkpoint: step 2 of `{wd}` (of 2 training steps)",
      "- Batch strategy: each batch is monolingual X-X with probability α = 0.5, cross-lingual "
      "X-Y with 0.5, mixed with 0.0 (`input.type_probs`); global batch 16, seed 0",
      "- Loss: InfoNCE over in-batch negatives (standard, temperature 0.05); AdamW, lr 0.003",
      "| xquad | squad | en, de | 0 |",
      "language: [de, en]",
      "### xquad-r",
      "| Mo mAP | Cr mAP | Mul mAP | Mo R@1 | Cr R@1 | Mul R@10 | questions |",
      f"| {m['xquad-r/mo_map']:.4f} | {m['xquad-r/cr_map']:.4f} | {m['xquad-r/mul_map']:.4f} | "
      f"{m['xquad-r/mo_r1']:.4f} | {m['xquad-r/cr_r1']:.4f} | {m['xquad-r/mul_r10']:.4f} | "
      f"{int(m['xquad-r/num_questions'])} |",
      "model = SentenceTransformer('tiny')  # this folder",
  ):
    assert line in card.splitlines(), (line, card)
  assert "Protocol: LAReQA" in card and f"From `{wd / 'eval' / 'step_2.json'}`." in card
  # Loaded by sentence-transformers without the "pooler MISSING ... newly initialized" report.
  r = subprocess.run([sys.executable, "-c", "import sentence_transformers as st; "
                      f"m = st.SentenceTransformer({str(out)!r}, device='cpu'); "
                      "print(m.encode(['a'], prompt_name='query').shape)"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip() == "(1, 32)"
  assert "MISSING" not in r.stderr and "newly initialized" not in r.stderr
