"""Tokenizers for the encoders: text -> fixed-bucket id batches, with prefixes and truncation counts.

Two back-ends behind one small interface (`BucketTokenizer`):
  * `HFTokenizer`: a HF fast tokenizer (`tokenizers.Tokenizer`, i.e. tokenizer.json). Used by the
    BERT / XLM-R family (e5, LaBSE, mBERT, XLM-R). Special tokens come from the tokenizer's own
    post-processor, so BERT ([CLS] .. [SEP]) and XLM-R (<s> .. </s>) both come out right.
  * `SentencePieceTokenizer`: the `sentencepiece` library with BOS/EOS, for USE-m3.

Why buckets: jit compiles one program per input shape (1.5-2.5 s each on our CPU), so every batch is
padded to the smallest of a few fixed lengths (default 16/32/64/128) that fits its longest text.
Texts longer than the largest bucket are truncated (keeping the closing special token); each
truncation is counted in `tokenizer.stats` and logged, never silent.

Encoding (evaluation, search) pads to finer lengths, `encode_buckets` (default `fine_buckets`:
each octave above 16 cut in quarters, multiples of 8). It sorts texts by length first, so a batch
pads only to its own longest text's bucket: on XQuAD-R + MLQA-R with e5's tokenizer that computes
1.13x the real tokens' FLOPs instead of the training buckets' 1.44x, for 11 compiles instead of 4.
Training batches keep the coarse buckets: a train step's compile costs far more than a forward's.
"""
from __future__ import annotations

import collections
import logging
import math
import pathlib
from typing import Iterable, Sequence

import numpy as np

DEFAULT_BUCKETS = (16, 32, 64, 128)


def fine_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
  """`buckets` plus each octave [b, 2b) from 16 up cut in quarters (multiples of 8, which
  accelerators tile well) below the largest: (16, 32, 64, 128) -> 16, 24, 32, 40, 48, 56, 64, 80,
  96, 112, 128. A text longer than 16 tokens then pads to under 1.5x its length (longer than 32:
  at most 1.25x)."""
  largest, out, b = max(buckets), set(int(x) for x in buckets), 16
  while b < largest:
    out.update(x for x in range(b, 2 * b, max(8, b // 4)) if x < largest)
    b *= 2
  return tuple(sorted(out))
KINDS = ("query", "passage")


class BucketTokenizer:
  """Shared logic: prefixes, validation, bucketing, padding and truncation counting.

  Subclasses implement `_ids(texts) -> (list of id lists, list of was-truncated flags)`.

  Attributes:
    prefixes: {'query': str, 'passage': str} prepended to the text before tokenization.
    buckets: sorted sequence lengths a batch may be padded to.
    encode_buckets: the finer lengths `Encoder.encode` pads its length-sorted batches to.
    pad_id: id written into padding positions (masked out by the encoders anyway).
    stats: Counter with 'texts' (tokenized so far) and 'truncated' (cut to the largest bucket).
  """

  def __init__(self, *, name: str, query_prefix: str, passage_prefix: str,
               buckets: Sequence[int], pad_id: int,
               encode_buckets: Sequence[int] | None = None):
    buckets = tuple(sorted(int(b) for b in buckets))
    if not buckets or buckets[0] < 3:
      raise ValueError(f"{name}: buckets must be lengths >= 3, got {buckets!r}")
    encode_buckets = tuple(sorted(int(b) for b in encode_buckets or fine_buckets(buckets)))
    if encode_buckets[0] < 3 or encode_buckets[-1] != buckets[-1]:
      raise ValueError(f"{name}: encode_buckets must be lengths >= 3 ending at the largest "
                       f"bucket {buckets[-1]}, got {encode_buckets!r}")
    self.name = name
    self.prefixes = {"query": query_prefix, "passage": passage_prefix}
    self.buckets = buckets
    self.encode_buckets = encode_buckets
    self.max_len = buckets[-1]
    self.pad_id = int(pad_id)
    self.stats: collections.Counter = collections.Counter()

  def _ids(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
    raise NotImplementedError

  def encode_ids(self, texts: Iterable[str], kind: str) -> list[list[int]]:
    """Texts -> unpadded id lists (prefix and special tokens included, at most `max_len` long).

    Raises ValueError naming the index of an empty / non-string text or an unknown kind.
    """
    if kind not in KINDS:
      raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {kind!r}")
    texts = list(texts)
    for i, t in enumerate(texts):
      if not isinstance(t, str):
        raise ValueError(f"{self.name}: text {i} is {type(t).__name__}, not str: {t!r:.80}")
      if not t.strip():
        raise ValueError(f"{self.name}: text {i} is empty ({t!r}); empty texts cannot be encoded")
    prefix = self.prefixes[kind]
    ids, truncated = self._ids([prefix + t for t in texts])
    n_trunc = int(sum(truncated))
    self.stats["texts"] += len(texts)
    self.stats["truncated"] += n_trunc
    if n_trunc:
      logging.info("%s: truncated %d of %d %s texts to %d tokens (total so far %d of %d)",
                   self.name, n_trunc, len(texts), kind, self.max_len,
                   self.stats["truncated"], self.stats["texts"])
    return ids

  def bucket_for(self, length: int, buckets: Sequence[int] | None = None) -> int:
    """Smallest of `buckets` (default: the training buckets) >= length (length is already
    <= max_len after truncation)."""
    for b in buckets or self.buckets:
      if length <= b:
        return b
    raise ValueError(f"{self.name}: length {length} exceeds the largest bucket {self.max_len}")

  def pad(self, ids: Sequence[Sequence[int]], length: int | None = None,
          batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Pads id lists to `length` (default: the smallest fitting bucket) and rows to `batch_size`.

    Returns {'input_ids': int32 [B, L], 'attention_mask': int32 [B, L]}; extra rows (when
    batch_size > len(ids)) are all-padding except one masked-in pad token, so pooling stays finite.
    """
    if not ids:
      raise ValueError(f"{self.name}: cannot pad an empty batch")
    longest = max(len(x) for x in ids)
    length = self.bucket_for(longest) if length is None else length
    if longest > length:
      raise ValueError(f"{self.name}: sequence of {longest} tokens does not fit length {length}")
    rows = max(len(ids), batch_size or 0)
    input_ids = np.full((rows, length), self.pad_id, np.int32)
    mask = np.zeros((rows, length), np.int32)
    for i, x in enumerate(ids):
      input_ids[i, :len(x)] = x
      mask[i, :len(x)] = 1
    mask[len(ids):, 0] = 1
    return {"input_ids": input_ids, "attention_mask": mask}

  def __call__(self, texts: Iterable[str], kind: str) -> dict[str, np.ndarray]:
    """Texts -> padded batch at the smallest fitting bucket (see `pad`)."""
    return self.pad(self.encode_ids(texts, kind))

  def pack(self, texts: Iterable[str], kind: str, row_multiple: int = 1,
           chunks: int = 1) -> dict[str, np.ndarray]:
    """Texts -> a packed batch: several texts per row of `max_len` tokens (see `pack_ids`);
    chunks > 1: each GradCache chunk packed on its own (`pack_chunks`)."""
    return pack_chunks(self.encode_ids(texts, kind), self.max_len, self.pad_id, row_multiple,
                       chunks)


def pack_ids(ids: Sequence[Sequence[int]], width: int, pad_id: int,
             row_multiple: int = 1) -> dict[str, np.ndarray]:
  """Id lists -> rows of `width` tokens, each text whole in one row, first-fit decreasing.

  Why: a padded batch costs its rows x its longest text; real training batches are 41% real
  tokens, packed ones 78% (benchmarks/bench_padding.py).
  The row count is rounded up to a multiple of both `row_multiple` (the local batch shards, so
  rows shard evenly) and len(ids) / 8, so that a batch size makes at most 8 row counts per
  kind: each new shape costs the train step a compile. Extra rows are all padding. Returns
  int32 arrays:
    input_ids, attention_mask [R, width]: the tokens, 1 where real;
    example [R, width]: which text a token belongs to (len(ids) for padding): attention stays
      within a text, and pooling sums a text's own tokens;
    position [R, width]: the token's position within its text (0 for padding);
    example_start, example_length [N]: where each text begins (flat index into R x width) and
      its length.
  An encoder computes the same embeddings from this as from `pad`'s batch.
  """
  n = len(ids)
  if not n:
    raise ValueError("pack_ids: cannot pack an empty batch")
  lengths = np.array([len(x) for x in ids], np.int64)
  if lengths.max() > width or lengths.min() < 1:
    raise ValueError(f"pack_ids: lengths must be in [1, {width}], got {lengths.min()}.."
                     f"{lengths.max()}")
  free, place = [], np.zeros((n, 2), np.int64)  # place: (row, column) of each text's start
  for i in np.argsort(-lengths, kind="stable"):
    row = next((r for r, f in enumerate(free) if f >= lengths[i]), len(free))
    if row == len(free):
      free.append(width)
    place[i] = row, width - free[row]
    free[row] -= lengths[i]
  multiple = math.lcm(int(row_multiple), max(1, n // 8))
  rows = -(-len(free) // multiple) * multiple
  out = {"input_ids": np.full((rows, width), pad_id, np.int32),
         "attention_mask": np.zeros((rows, width), np.int32),
         "example": np.full((rows, width), n, np.int32),
         "position": np.zeros((rows, width), np.int32),
         "example_start": (place[:, 0] * width + place[:, 1]).astype(np.int32),
         "example_length": lengths.astype(np.int32)}
  for i, x in enumerate(ids):
    (r, c), m = place[i], len(x)
    out["input_ids"][r, c:c + m] = x
    out["attention_mask"][r, c:c + m] = 1
    out["example"][r, c:c + m] = i
    out["position"][r, c:c + m] = np.arange(m)
  return out


def place_packed(packed: dict[str, np.ndarray], rows: int, pad_id: int, first_text: int,
                 first_row: int, total_texts: int) -> dict[str, np.ndarray]:
  """One host's `pack_ids` batch -> its slice of a global packed batch of `total_texts` texts.

  Why: on several hosts each packs its own texts, to its own row count; a global array needs
  every host's slice the same shape, and the texts' ids and starts must name global positions.
  So the slice gets padding rows up to `rows` (the hosts' largest count), its texts become
  first_text.., its padding id becomes total_texts, and its starts move by first_row rows.
  Concatenating the hosts' slices in host order gives a batch `pack_ids` could have made.
  """
  have, width = packed["input_ids"].shape
  if rows < have:
    raise ValueError(f"place_packed: this host packed {have} rows, more than the {rows} asked")
  n = len(packed["example_length"])
  extra = ((0, rows - have), (0, 0))
  example = np.where(packed["example"] == n, total_texts, packed["example"] + first_text)
  return {"input_ids": np.pad(packed["input_ids"], extra, constant_values=pad_id),
          "attention_mask": np.pad(packed["attention_mask"], extra),
          "example": np.pad(example, extra, constant_values=total_texts).astype(np.int32),
          "position": np.pad(packed["position"], extra),
          "example_start": (packed["example_start"] + first_row * width).astype(np.int32),
          "example_length": packed["example_length"]}


def split_chunks(packed: dict[str, np.ndarray], chunks: int) -> list[dict[str, np.ndarray]]:
  """A `join_chunks` batch -> its chunks' own packed batches: rows and texts c, c+chunks, ..."""
  return [{k: v[c::chunks] for k, v in packed.items()} for c in range(chunks)]


def join_chunks(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Packed batches of equal shapes -> one batch whose row k*len(parts)+c and text k*len(parts)+c
  are part c's row and text k. That is how GradCache chunks a batch (train_step.make_loss_and_grads:
  chunk c = rows c, c+chunks, ..., so every chunk keeps rows of every device), so each of its
  chunks is one part, whole."""
  return {k: np.stack([p[k] for p in parts], axis=1).reshape(-1, *parts[0][k].shape[1:])
          for k in parts[0]}


def pack_chunks(ids: Sequence[Sequence[int]], width: int, pad_id: int, row_multiple: int = 1,
                chunks: int = 1) -> dict[str, np.ndarray]:
  """`pack_ids` for GradCache: texts c, c+chunks, ... (its chunk c) packed on their own, to the
  chunks' largest row count, and joined (`join_chunks`). chunks=1: `pack_ids` itself.

  Why: GradCache embeds one chunk at a time, so a chunk's texts must sit in its own rows, with
  ids and starts of its own. Its texts keep their places: the embeddings that GradCache puts back
  in batch order are those of the padded batch."""
  if chunks == 1:
    return pack_ids(ids, width, pad_id, row_multiple)
  if len(ids) % chunks:
    raise ValueError(f"pack_chunks: {len(ids)} texts do not split into {chunks} GradCache chunks")
  parts = [pack_ids(ids[c::chunks], width, pad_id, row_multiple) for c in range(chunks)]
  rows = max(p["input_ids"].shape[0] for p in parts)
  return join_chunks([place_packed(p, rows, pad_id, first_text=0, first_row=0,
                                   total_texts=len(ids) // chunks) for p in parts])


class HFTokenizer(BucketTokenizer):
  """A HF fast tokenizer (tokenizer.json) with prefixes, buckets and truncation counting.

  Recommended for every BERT / XLM-R family model. Build with `HFTokenizer.from_file` (a
  tokenizer.json) or `HFTokenizer.from_pretrained_dir` (any HF snapshot, via transformers).
  """

  def __init__(self, tokenizer, **kw):
    import tokenizers  # noqa: F401  (fail early with a clear ImportError)
    tokenizer.no_padding()
    kw.setdefault("pad_id", _find_pad_id(tokenizer))
    super().__init__(**kw)
    # The library truncates while keeping the post-processor's special tokens; `overflowing`
    # tells us which texts were cut.
    tokenizer.enable_truncation(max_length=self.max_len)
    self.tokenizer = tokenizer

  @classmethod
  def from_file(cls, path: str | pathlib.Path, **kw) -> "HFTokenizer":
    import tokenizers
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"tokenizer file not found: {path}")
    kw.setdefault("name", path.parent.name or str(path))
    return cls(tokenizers.Tokenizer.from_file(str(path)), **kw)

  @classmethod
  def from_pretrained_dir(cls, path: str | pathlib.Path, **kw) -> "HFTokenizer":
    path = pathlib.Path(path)
    if (path / "tokenizer.json").is_file():
      return cls.from_file(path / "tokenizer.json", **kw)
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(str(path), use_fast=True)
    if not getattr(tok, "is_fast", False):
      raise ValueError(f"{path}: no fast tokenizer could be built (need tokenizer.json or a "
                       "vocab that transformers can convert)")
    kw.setdefault("name", path.name)
    kw.setdefault("pad_id", tok.pad_token_id if tok.pad_token_id is not None else 0)
    return cls(tok.backend_tokenizer, **kw)

  def _ids(self, texts):
    # The fast variant skips character offsets, which nothing here reads (~20% faster).
    encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
    encs = encode(texts, add_special_tokens=True)
    return [e.ids for e in encs], [bool(e.overflowing) for e in encs]


class SentencePieceTokenizer(BucketTokenizer):
  """The `sentencepiece` library with BOS/EOS added (USE-m3's sp.model).

  Truncation keeps BOS + the first max_len-2 pieces + EOS.
  """

  def __init__(self, model_file: str | pathlib.Path, **kw):
    import sentencepiece
    model_file = pathlib.Path(model_file)
    if not model_file.is_file():
      raise FileNotFoundError(f"sentencepiece model not found: {model_file}")
    self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    kw.setdefault("name", model_file.name)
    # USE-m3's model defines no pad piece (pad_id() == -1); padding is masked, so 0 (<unk>) is safe.
    kw.setdefault("pad_id", max(self.sp.pad_id(), 0))
    super().__init__(**kw)

  def _ids(self, texts):
    ids = self.sp.encode(texts, out_type=int, add_bos=True, add_eos=True)
    truncated = [len(x) > self.max_len for x in ids]
    ids = [x if len(x) <= self.max_len else x[:self.max_len - 1] + x[-1:] for x in ids]
    return ids, truncated


def _find_pad_id(tokenizer) -> int:
  for tok in ("<pad>", "[PAD]"):
    i = tokenizer.token_to_id(tok)
    if i is not None:
      return i
  return 0

