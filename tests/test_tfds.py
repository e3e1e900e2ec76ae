"""The tfds source kind: a TFDS builder defined here, built offline in a temporary data_dir with
one config per language, prepared into a store (groups linked across languages by an id
feature, negatives from a sequence feature) and trained on for a few steps with the tiny test
config; and the refusals (unprepared dataset, missing roles, evaluation data)."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir.data import store as store_lib

tfds = pytest.importorskip("tensorflow_datasets")
REPO = pathlib.Path(__file__).resolve().parents[1]

# id -> {lang: (question, answer sentence, [other sentences of its paragraph])}
RECORDS = {
    "q1": {"en": ("When did the bridge open?", "The bridge opened in 1932.", ["It is long."]),
           "de": ("Wann wurde die Brücke eröffnet?", "Die Brücke wurde 1932 eröffnet.",
                  ["Sie ist lang."])},
    "q2": {"en": ("Who built it?", "Engineers from Sydney built it.", []),
           "de": ("Wer hat sie gebaut?", "Ingenieure aus Sydney bauten sie.", [])},
    "q3": {"en": ("How long is it?", "It is long.", ["The bridge opened in 1932."])},
}


class ToyQa(tfds.core.GeneratorBasedBuilder):
  """Per-language QA in the xquad layout: config = language, `id` shared by translations."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="en"), tfds.core.BuilderConfig(name="de")]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "id": tfds.features.Text(), "question": tfds.features.Text(),
        "answer": {"sentence": tfds.features.Text()},
        "others": tfds.features.Sequence(tfds.features.Text())}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for qid, by_lang in RECORDS.items():
      if self.builder_config.name in by_lang:
        q, a, others = by_lang[self.builder_config.name]
        yield qid, {"id": qid, "question": q, "answer": {"sentence": a}, "others": others}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tfds")
  for config in ("en", "de"):
    ToyQa(config=config, data_dir=str(folder)).download_and_prepare()
  return folder


def source(data_dir, **kw):
  return dict(dict(name="toy", kind="tfds", dataset="toy_qa", configs={"en": "en", "de": "de"},
                   data_dir=str(data_dir), min_lang_share=0,
                   fields=dict(query="question", positive="answer.sentence", group_id="id",
                               negatives="others")), **kw)


def test_a_built_dataset_is_prepared_into_a_store(data_dir, tmp_path):
  store = data.open_store(source(data_dir), tmp_path)
  assert store.langs == ("de", "en")
  ids = store.group_ids(range(store.num_groups))
  assert ids == ["q1", "q2", "q3"]
  for lang in store.langs:
    idx = store.index(lang)
    for g, qid in enumerate(ids):
      if lang not in RECORDS[qid]:
        assert idx.group_query[g] == -1 and idx.group_positive[g] == -1
        continue
      q, a, others = RECORDS[qid][lang]
      assert store.texts(lang, [idx.group_query[g], idx.group_positive[g]]) == [q, a]
      assert store.texts(lang, store.negatives(lang, g)) == others
  # Translations share an identity; q3's answer is q1's negative text: the same passage row, so
  # q3's positive and q1's negative share an identity and are never in one batch.
  assert store.group_identity[0] != store.group_identity[1]
  en = store.index("en")
  assert store.negatives("en", 0)[0] == en.group_positive[2]
  # Keyed by the prepared files' contents: the same dataset again is the same store.
  assert data.open_store(source(data_dir), tmp_path).directory == store.directory
  assert any("toy_qa" in i["path"] for i in store.meta["inputs"])


def test_refusals_name_the_problem(data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="not found|not prepared"):
    data.open_store(source(data_dir, dataset="toy_qa", configs={"fr": "fr"}), tmp_path)
  with pytest.raises(ValueError, match="missing \\['group_id'\\]"):
    data.open_store(source(data_dir, fields=dict(query="question", positive="answer.sentence")),
                    tmp_path)
  with pytest.raises(ValueError, match="no feature 'answer.text'"):
    data.open_store(source(data_dir, fields=dict(query="question", positive="answer.text",
                                                 group_id="id")), tmp_path)
  # LAReQA's evaluation sets come from these splits: refused before anything is read.
  for dataset, split in (("xquad/de", "test"), ("mlqa/de.de", "validation"),
                         ("mlqa/en.en", "test[:50%]"), ("squad", "validation")):
    with pytest.raises(ValueError, match="evaluation"):
      data.open_store(source(data_dir, dataset=dataset, configs=None, lang="de", split=split),
                      tmp_path)


def test_trains_on_a_tfds_source(data_dir, tmp_path):
  """The tiny test config, its source replaced by the TFDS dataset: 4 steps, loss finite."""
  config = tmp_path / "config.py"
  src = source(data_dir)
  config.write_text(
      "import sys\nsys.path.insert(0, %r)\nimport configs_test_train as base\n\n"
      "def get_config(arg=None):\n  c = base.get_config(arg)\n  c.total_steps = 4\n"
      "  c.log_every = 2\n  c.checkpoint.every = 4\n  c.input.batch_size = 2\n"
      "  c.input.sources = [%r]\n  return c\n" % (str(REPO / "tests"), src))
  # One device: the toy's 3 groups cannot fill a batch per device of 8 fake ones.
  env = {"HYBRID_IR_STORES": str(tmp_path / "stores"), "PATH": "/usr/bin:/bin",
         "HOME": str(tmp_path), "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  proc = subprocess.run([sys.executable, "-m", "hybrid_ir.train", "--config", str(config),
                         "--workdir", str(tmp_path / "w")], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  metrics = [json.loads(l) for l in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  losses = [m["train/loss"] for m in metrics if "train/loss" in m]
  assert losses and np.isfinite(losses).all()
  assert max(m.get("step", 0) for m in metrics) == 4
  stores = [p for p in (tmp_path / "stores").iterdir() if store_lib.is_store(p)]
  assert [p.name.split("-")[0] for p in stores] == ["toy"]
