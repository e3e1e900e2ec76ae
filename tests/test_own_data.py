"""The README's "Train on your own data" walk-through, run as a user would: three JSONL files (one
per language, shared group ids) -> train -> search a corpus of your own -> export for
sentence-transformers (with the tiny random model, model=mini, so it takes seconds)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from hybrid_ir.data import lareqa

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(*args, cwd=REPO):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  out = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, f"{args[0]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
  return out


def test_three_files_to_a_trained_searched_and_exported_model(tmp_path, shared_data):
  ev = lareqa.load_lareqa(shared_data, "xquad-r", langs=("en", "de", "zh"))
  files = []
  for li, lang in enumerate(ev.langs):
    path = tmp_path / f"{lang}.jsonl"
    rows = [i for i in range(ev.num_questions) if ev.question_lang[i] == li][:150]
    path.write_text("".join(json.dumps({
        "group_id": ev.question_ids[i], "lang": lang, "query": ev.question_text[i],
        "positive": ev.cand_sentence[ev.answer[i]]}) + "\n" for i in rows))
    files.append(str(path))
  config = f"configs/own_data.py:jsonl={'+'.join(files)},model=mini,steps=4,batch=8"
  work = tmp_path / "work"
  run("hybrid_ir.train", f"--config={config}", f"--workdir={work}")
  assert (work / "checkpoints" / "4").is_dir()
  # Your corpus: the English answer sentences; your queries: the German questions.
  en, de = ev.langs.index("en"), ev.langs.index("de")
  cands = sorted({int(ev.answer[i]) for i in range(ev.num_questions) if ev.question_lang[i] == en})
  (tmp_path / "corpus.jsonl").write_text("".join(
      json.dumps({"id": f"d{c}", "text": ev.cand_sentence[c], "lang": "en"}) + "\n" for c in cands))
  queries = [i for i in range(ev.num_questions) if ev.question_lang[i] == de][:40]
  (tmp_path / "queries.tsv").write_text("".join(
      f"q{i}\t{ev.question_text[i]}\tde\n" for i in queries))
  (tmp_path / "qrels.txt").write_text("".join(
      f"q{i} Q0 d{ev.relevant_by_lang[i][en]} 1\n" for i in queries))
  out = run("hybrid_ir.search", f"--config={config}", f"--workdir={work}",
            f"--corpus={tmp_path / 'corpus.jsonl'}", f"--queries={tmp_path / 'queries.tsv'}",
            f"--qrels={tmp_path / 'qrels.txt'}", f"--out={tmp_path / 'run.trec'}")
  lines = (tmp_path / "run.trec").read_text().splitlines()
  assert len(lines) == 40 * 100 and lines[0].split()[0] in {f"q{i}" for i in queries}
  assert "nDCG@10" in out.stdout + out.stderr
  run("hybrid_ir.export", f"--config={config}", f"--workdir={work}", f"--out={tmp_path / 'st'}")
  assert (tmp_path / "st" / "modules.json").is_file()
  assert (tmp_path / "st" / "model.safetensors").is_file()


def test_own_data_config_errors_name_the_problem():
  from hybrid_ir import config_flags
  with pytest.raises(ValueError, match="give exactly one of"):
    config_flags.load_config_file(str(REPO / "configs/own_data.py") + ":steps=3")
  with pytest.raises(ValueError, match="expected key=value"):
    config_flags.load_config_file(str(REPO / "configs/own_data.py") + ":jsonl=a,alpha=1")
