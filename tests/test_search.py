"""hybrid_ir.search: input checks, exact rankings with a designed fake encoder (cross-checked
with ir_measures by hand), and end to end with a tiny random BERT and real Orbax checkpoints,
including the embedding cache's invalidation when a checkpoint changes."""
import json
import os
import math
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hybrid_ir import checkpoint
from hybrid_ir import search
from hybrid_ir.data import text_files

REPO = pathlib.Path(__file__).resolve().parents[1]

# A fake encoder: each text is a fixed 3-d unit vector, so every score is known.
VECS = {"a1": [1, 0, 0], "a2": [0.6, 0.8, 0], "b1": [0, 1, 0], "a1 again": [1, 0, 0],
        "c1": [0, 0, 1], "a3": [0.8, 0.6, 0], "anti": [-1, 0, 0],
        "alpha": [1, 0, 0], "beta": [0, 1, 0], "gamma": [0, 0, 1]}
CORPUS = [("d0", "a1"), ("d1", "a2"), ("d2", "b1"), ("d3", "a1 again"), ("d4", "c1"),
          ("d5", "a3"), ("d6", "anti")]
# Score desc, ties by corpus order (d0/d3 tie at 1; zeros keep corpus order).
EXPECTED = {"qa": ["d0", "d3", "d5", "d1", "d2"], "qb": ["d2", "d1", "d5", "d0", "d3"],
            "qc": ["d4", "d0", "d1", "d2", "d3"]}


def fake_predict(params, texts, kind):
  del params, kind
  return np.asarray([VECS[t] for t in texts], np.float32)


@pytest.fixture
def files(tmp_path):
  (tmp_path / "corpus.jsonl").write_text(
      "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in CORPUS) + "\n")
  (tmp_path / "queries.tsv").write_text("qa\talpha\ten\nqb\tbeta\tde\nqc\tgamma\ten\n")
  # qa: d5 at rank 3. qb: d1 (grade 2) at rank 2, d6 (grade 1) beyond k=5. qc: unjudged.
  (tmp_path / "qrels.txt").write_text("qa Q0 d5 1\nqb 0 d1 2\nqb 0 d6 1\nqb 0 d2 0\n")
  return tmp_path


def test_exact_ranking_across_blocks_and_shards_and_hand_computed_metrics(files, tmp_path):
  queries = text_files.read_texts(files / "queries.tsv", "queries")
  corpus = text_files.read_texts(files / "corpus.jsonl")
  assert queries.langs == ["en", "de", "en"] and corpus.langs == [None] * 7
  # Blocks of 2 queries x 2 documents and shards of 3 documents: every merge path is used.
  cache = search.cache_entry(tmp_path / "cache", {"name": "fake"}, "p", files / "corpus.jsonl")
  scores, idx = search.search(fake_predict, None, queries, corpus, k=5, cache=cache,
                              shard_size=3, query_block=2, cand_block=2)
  got = {q: [corpus.ids[i] for i in row] for q, row in zip(queries.ids, idx)}
  assert got == EXPECTED
  np.testing.assert_allclose(scores[0], [1, 1, .8, .6, 0], atol=1e-6)
  run = search.write_run(tmp_path / "run.trec", queries, corpus, scores, idx, tag="t1")
  lines = (tmp_path / "run.trec").read_text().splitlines()
  assert len(lines) == 15
  assert lines[0] == "qa Q0 d0 1 1 t1" and lines[2].startswith("qa Q0 d5 3 0.8")
  assert [l.split()[2] for l in lines[5:10]] == EXPECTED["qb"]
  qrels = text_files.read_qrels(files / "qrels.txt", queries, corpus)
  m = search.evaluate_run(run, qrels, queries)
  assert (m["num_queries"], m["num_judged"]) == (3, 2)
  ndcg_b = (2 / math.log2(3)) / (2 + 1 / math.log2(3))  # linear gains, as trec_eval
  assert m["all"]["RR@10"] == pytest.approx((1 / 3 + 1 / 2) / 2)
  assert m["all"]["nDCG@10"] == pytest.approx((0.5 + ndcg_b) / 2)
  assert m["all"]["R@100"] == pytest.approx((1 + 0.5) / 2)  # d6 is not in qb's top 5
  assert m["per_lang"]["en"]["RR@10"] == pytest.approx(1 / 3)  # qc (en) is unjudged
  assert m["per_lang"]["de"]["nDCG@10"] == pytest.approx(ndcg_b)
  table = search.metrics_table(m)
  assert "| de | 1 |" in table and "| all | 2 |" in table
  # The cache holds the corpus embeddings: a second search encodes only the queries.
  calls = []
  counting = lambda p, texts, kind: calls.append(kind) or fake_predict(p, texts, kind)  # noqa
  again = search.search(counting, None, queries, corpus, k=5, cache=cache, shard_size=3)
  assert calls == ["query"]
  np.testing.assert_array_equal(again[1], idx)


def test_k_beyond_the_corpus_lists_every_document_once(files, tmp_path):
  queries = text_files.read_texts(files / "queries.tsv", "queries")
  corpus = text_files.read_texts(files / "corpus.jsonl")
  scores, idx = search.search(fake_predict, None, queries, corpus, k=50)
  run = search.write_run(tmp_path / "run.trec", queries, corpus, scores, idx)
  assert all(sorted(docs) == sorted(corpus.ids) for docs in run.values())


@pytest.mark.parametrize("name,content,message", [
    ("c.jsonl", '{"id": "d1", "text": "x"}\n{"id": "d2"}\n', r"c.jsonl:2: missing field 'text'"),
    ("c.jsonl", '{"id": "d1", "text": "x"}\n\n{"id": "d1", "text": "y"}\n',
     r"c.jsonl:3: duplicate id 'd1' \(first at line 1\)"),
    ("c.jsonl", '{"id": "d1", "text": "  "}\n', r"c.jsonl:1: empty text for id 'd1'"),
    ("c.jsonl", '{"id": "d 1", "text": "x"}\n', r"c.jsonl:1: id 'd 1' contains whitespace"),
    ("c.jsonl", '{"id": "d1", "text": "x"\n', r"c.jsonl:1: invalid JSON"),
    ("c.tsv", "d1\tx\nd2\n", r"c.tsv:2: expected id<TAB>text\[<TAB>lang\], got 1"),
    ("c.tsv", "d1\tx\td\te\n", r"c.tsv:1: expected id<TAB>text\[<TAB>lang\], got 4"),
    ("c.tsv", "\td\n", r"c.tsv:1: empty id"),
    ("c.csv", "d1,x\n", r"c.csv: unknown format"),
    ("c.tsv", "\n\n", r"c.tsv: no corpus records"),
])
def test_bad_corpus_names_file_and_line(tmp_path, name, content, message):
  (tmp_path / name).write_text(content)
  with pytest.raises(ValueError, match=message):
    text_files.read_texts(tmp_path / name)


@pytest.mark.parametrize("qrels,message", [
    ("qa Q0 d1 1\nqx Q0 d1 1\n", r"qrels.txt:2: qid 'qx' is not in the queries file"),
    ("qa Q0 d9 1\n", r"qrels.txt:1: docid 'd9' \(qid 'qa'\) is not in the corpus file"),
    ("qa Q0 d1\n", r"qrels.txt:1: expected 'qid Q0 docid relevance', got 3 fields"),
    ("qa Q0 d1 high\n", r"qrels.txt:1: relevance 'high' is not an integer"),
    ("qa Q0 d1 1\nqa Q0 d1 0\n", r"qrels.txt:2: duplicate judgement"),
])
def test_bad_qrels_name_file_and_line(files, qrels, message):
  (files / "qrels.txt").write_text(qrels)
  queries = text_files.read_texts(files / "queries.tsv", "queries")
  corpus = text_files.read_texts(files / "corpus.jsonl")
  with pytest.raises(ValueError, match=message):
    text_files.read_qrels(files / "qrels.txt", queries, corpus)


def test_scoring_without_ir_measures_says_what_to_install(files, monkeypatch):
  monkeypatch.setitem(sys.modules, "ir_measures", None)  # `import ir_measures` -> ImportError
  queries = text_files.read_texts(files / "queries.tsv", "queries")
  with pytest.raises(ImportError, match=r"pip install 'hybrid_ir\[search\]'"):
    search.evaluate_run({}, {"qa": {"d0": 1}}, queries)


def test_an_unknown_measure_is_named(files):
  queries = text_files.read_texts(files / "queries.tsv", "queries")
  with pytest.raises(ValueError, match="measure 'nDCG@x' is not an ir_measures measure"):
    search.evaluate_run({"qa": {"d0": 1.0}}, {"qa": {"d0": 1}}, queries, ["nDCG@x"])


# ------------------------------------------------------------------------------------------------
# End to end: a tiny random BERT, its checkpoints, and the embedding cache.
# ------------------------------------------------------------------------------------------------

TINY = dict(name="random_init", pooling="mean", dtype="float32", buckets=(32,), query_prefix="",
            passage_prefix="", random_init=dict(hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=64,
                                                max_position_embeddings=64))
DOCS = ["Berlin is the capital of Germany.", "Paris ist die Hauptstadt von Frankreich.",
        "Bananas are yellow and sweet.", "El Nilo es el río más largo de África.",
        "東京は日本の首都です。", "The Danube flows through Vienna.", "Kiwis cannot fly."]


@pytest.fixture(scope="module")
def tiny():
  from hybrid_ir import models
  config = ml_collections.ConfigDict(dict(model=TINY, eval_batch_size=8))
  return config, models.load_encoder(config.model)


@pytest.fixture
def corpus_files(tmp_path):
  (tmp_path / "corpus.jsonl").write_text("".join(
      json.dumps({"id": f"doc{i}", "text": t, "lang": "xx"}) + "\n" for i, t in enumerate(DOCS)))
  (tmp_path / "queries.jsonl").write_text("".join(
      json.dumps({"id": f"q{i}", "text": t}) + "\n"
      for i, t in enumerate(["capital of Germany", "longest river", "fruit"])))
  (tmp_path / "qrels.txt").write_text("q0 0 doc0 1\nq1 0 doc3 1\nq2 0 doc2 1\n")
  return tmp_path


def _save(workdir, step, params, config):
  mngr = checkpoint.make_manager(workdir, max_to_keep=None, async_save=False)
  checkpoint.save(mngr, step, {"params": params, "step": jnp.asarray(step)}, {}, config,
                  force=True)
  mngr.wait_until_finished()
  mngr.close()


def _perturb(params, seed):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.5 * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


def _shard_stat(cache_dir: str):
  st = (pathlib.Path(cache_dir) / "shard-00000.npy").stat()
  return st.st_ino, st.st_mtime_ns


def test_checkpoint_search_end_to_end_and_cache_invalidation(tiny, corpus_files, tmp_path):
  config, encoder = tiny
  wd = tmp_path / "wd"
  p1, p2 = _perturb(encoder.params, 1), _perturb(encoder.params, 2)
  _save(wd, 1, p1, config)
  _save(wd, 2, p2, config)
  kw = dict(corpus=str(corpus_files / "corpus.jsonl"), queries=str(corpus_files / "queries.jsonl"),
            qrels=str(corpus_files / "qrels.txt"), workdir=str(wd), k=5, encoder=encoder)

  first = search.run(config, step=1, **kw)
  assert first["tag"] == "step_1"
  assert first["run"] == str(wd / "search" / "queries.jsonl.step_1.trec")
  run1 = pathlib.Path(first["run"]).read_text()
  # The ranking is exactly a brute-force one over the same restored params' embeddings.
  q = encoder.encode(p1, ["capital of Germany", "longest river", "fruit"], "query")
  c = encoder.encode(p1, DOCS, "passage")
  want = np.argsort(-(q @ c.T), axis=1, kind="stable")[:, :5]
  got = [[int(l.split()[2][3:]) for l in run1.splitlines() if l.startswith(f"q{i} ")]
         for i in range(3)]
  np.testing.assert_array_equal(got, want)
  m = json.loads(pathlib.Path(first["run"] + ".metrics.json").read_text())
  assert m["checkpoint"] == "step_1" and m["num_judged"] == 3
  assert set(m["all"]) == {"nDCG@10", "R@100", "RR@10"}

  # The latest checkpoint by default: other params, so another cache entry and another run.
  second = search.run(config, **kw)
  assert second["tag"] == "step_2" and second["cache"] != first["cache"]
  assert pathlib.Path(second["run"]).read_text() != run1

  # The same checkpoint again: its cached embeddings are reused, not re-encoded.
  stat = _shard_stat(first["cache"])
  again = search.run(config, step=1, **kw)
  assert again["cache"] == first["cache"] and _shard_stat(first["cache"]) == stat
  assert pathlib.Path(again["run"]).read_text() == run1

  # Step 1 rewritten in place with other params (a retrained run in the same workdir): same
  # step, new identity, new embeddings.
  shutil.rmtree(wd / "checkpoints" / "1")
  _save(wd, 1, _perturb(encoder.params, 3), config)
  rewritten = search.run(config, step=1, **kw)
  assert rewritten["cache"] not in (first["cache"], second["cache"])
  assert pathlib.Path(rewritten["run"]).read_text() != run1

  # An edited corpus is another entry too.
  with open(corpus_files / "corpus.jsonl", "a") as f:
    f.write(json.dumps({"id": "doc7", "text": "Owls hunt at night."}) + "\n")
  edited = search.run(config, step=1, **kw)
  assert edited["cache"] not in (first["cache"], rewritten["cache"])
  assert len(list((wd / "search" / "cache").iterdir())) == 4


def test_search_needs_a_checkpoint_or_pretrained(tiny, corpus_files, tmp_path):
  config, encoder = tiny
  kw = dict(corpus=str(corpus_files / "corpus.jsonl"), queries=str(corpus_files / "queries.jsonl"),
            encoder=encoder)
  with pytest.raises(ValueError, match="pass --workdir .* or --pretrained"):
    search.run(config, **kw)
  with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
    search.run(config, workdir=str(tmp_path / "empty"), **kw)
  with pytest.raises(ValueError, match="--out is required without --workdir"):
    search.run(config, pretrained=True, **kw)


def test_cli_pretrained_with_qrels_and_a_bad_file(corpus_files, tmp_path):
  """The binary as a user runs it: a TREC run file, metrics printed; bad input names file:line."""
  cmd = [sys.executable, "-m", "hybrid_ir.search",
         f"--config={REPO / 'tests' / 'configs_test_train.py'}", "--pretrained", f"--corpus={corpus_files / 'corpus.jsonl'}",
         f"--queries={corpus_files / 'queries.jsonl'}", f"--qrels={corpus_files / 'qrels.txt'}",
         f"--out={tmp_path / 'out' / 'run.trec'}", "--k=3", f"--cache_dir={tmp_path / 'cache'}"]
  out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| all | 3 |" in out.stdout
  lines = (tmp_path / "out" / "run.trec").read_text().splitlines()
  assert len(lines) == 9 and all(l.endswith(" hybrid_ir") for l in lines)
  assert (tmp_path / "out" / "run.trec.metrics.json").is_file()
  (corpus_files / "qrels.txt").write_text("q0 0 doc0 1\nq0 0 nodoc 1\n")
  out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert f"{corpus_files / 'qrels.txt'}:2: docid 'nodoc'" in out.stderr


def test_help_lists_config_first_with_its_form():
  out = subprocess.run([sys.executable, "-m", "hybrid_ir.search", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stderr == ""
  doc, _, flags_part = out.stdout.partition("\nflags:\n")
  assert doc.strip() == search.__doc__.strip()
  lines = flags_part.splitlines()
  assert lines[:6] == [
      "",
      f"{REPO / 'hybrid_ir' / 'search.py'}:",
      "  --config: file[:arg] (required): the config: model, data, schedule",
      "    (configs/*.py). The optional :arg goes to the file's get_config(arg), e.g.",
      "    configs/recipe.py:seed=1; any key is overridden with --config.<key>=<value>.",
      "    (default: 'None')"]
  names = [l.split(":")[0].strip().replace("--[no]", "--") for l in lines if l.startswith("  --")]
  assert names == ["--config", "--batch_size", "--cache_dir", "--cand_block", "--corpus", "--k",
                   "--measures", "--out", "--pretrained", "--qrels", "--queries", "--query_block",
                   "--step", "--tag", "--workdir"]
  assert lines[-1] == "Try --helpfull to get a list of all flags."


def test_cli_console_shows_only_its_own_lines(corpus_files, tmp_path):
  """No backend probe or library INFO on the console: they are in <run folder>/search.INFO."""
  run_file = tmp_path / "out" / "run.trec"
  cmd = [sys.executable, "-m", "hybrid_ir.search",
         f"--config={REPO / 'tests' / 'configs_test_train.py'}", "--pretrained",
         f"--corpus={corpus_files / 'corpus.jsonl'}", f"--queries={corpus_files / 'queries.jsonl'}",
         f"--out={run_file}", "--k=3", "--cache_dir="]
  # As a user runs it: JAX probes its backends (the tests' conftest names the CPU).
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")}
  out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.splitlines() == [
      "search: 3 queries x 7 documents, top 3, random_init (pretrained)", f"wrote {run_file}"]
  # stderr: the encoder's progress bars only.
  bars = [l for l in out.stderr.replace("\r", "\n").splitlines() if l.strip()]
  assert bars and all(l.startswith(("encode passage (random_init)", "encode query (random_init)"))
                      for l in bars), bars
  assert "Unable to initialize backend" in (tmp_path / "out" / "search.INFO").read_text()
