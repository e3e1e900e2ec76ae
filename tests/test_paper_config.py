"""configs/paper/xlmr_hybrid.py runs on a small fixture: mMARCO in its real layout (the config's
own file names, 7 languages, id triples) plus SQuAD-format QA (XQuAD-R files as squad-mt), both
with one hard negative per example, with the standard and the printed ('paper') loss."""
import importlib.util
import json
import os
import pathlib

import pytest

from hybrid_ir import input_pipeline, prepare, sampler, train

import synthetic_mmarco  # tests/synthetic_mmarco.py

REPO = pathlib.Path(__file__).resolve().parents[1]


def paper_config(data_dir):
  spec = importlib.util.spec_from_file_location('xlmr_hybrid',
                                                REPO / 'configs' / 'paper' / 'xlmr_hybrid.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.get_config(data_dir=str(data_dir))


@pytest.fixture(scope='module')
def fixture_dir(tmp_path_factory, shared_data):
  root = tmp_path_factory.mktemp('paper_data')
  module, config = paper_config(root)
  squad_mt = root / 'squad-mt'
  squad_mt.mkdir()
  for lang in module.LANGS:
    os.symlink(shared_data / 'xquad-r' / f'{lang}.json', squad_mt / f'{lang}.json')
  mm = next(s for s in config.input.sources if s['kind'] == 'mmarco')
  syn = synthetic_mmarco.write_synthetic(root / 'syn', 20_000, langs=tuple(module.MMARCO_LANGS))
  # Put the synthetic files where the config looks for mMARCO's own file names.
  for field in ('collections', 'queries'):
    for lang, path in mm[field].items():
      pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
      os.rename(syn[field][lang], path)
  os.rename(syn['triples'], mm['triples'])
  return root


def small(config, variant):
  config.model = dict(name='random_init', pooling='mean', dtype='float32', buckets=(64,),
                      query_prefix='Query: ', passage_prefix='Passage: ',
                      random_init=dict(hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64,
                                       max_position_embeddings=64))
  config.mesh = dict(data=1, fsdp=-1)
  config.input.batch_size = 16
  config.log_every = 1
  config.checkpoint.every = 100
  config.loss.variant = variant
  return config


@pytest.mark.parametrize('variant', ['standard', 'paper'])
def test_paper_config_trains_on_mmarco_layout_and_squad_with_negatives(fixture_dir, tmp_path,
                                                                        variant):
  _, config = paper_config(fixture_dir)
  config = small(config, variant)
  config.input.store_dir = str(tmp_path / 'stores')
  with pytest.raises(FileNotFoundError, match='python -m hybrid_ir.prepare'):
    input_pipeline.open_sources(config.input)  # prepare='never': the stores come first
  rows = prepare.prepare(config)
  assert [r['source'] for r in rows] == ['squad-mt', 'mmarco']
  assert rows[1]['langs'] == sorted(['ar', 'de', 'en', 'es', 'hi', 'ru', 'zh'])
  # Enough steps that both sources make batches (sources are drawn by their group counts).
  s = sampler.Sampler(input_pipeline.open_sources(config.input), config.input)
  drawn = [s.next_batch()['source'] for _ in range(30)]
  steps = 1 + max(drawn.index('squad-mt'), drawn.index('mmarco'))
  config.total_steps = steps
  train.train(config, tmp_path / 'w')
  logged = [json.loads(l) for l in (tmp_path / 'w' / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in logged] == list(range(1, steps + 1))
  for r in logged:
    assert r['train/loss'] > 0 and 'train/masked_negatives' in r
    assert r['train/masked_in_batch'] == 0


def test_paper_variant_needs_negatives_from_every_source(fixture_dir, tmp_path):
  _, config = paper_config(fixture_dir)
  config = small(config, 'paper')
  config.input.sources[0]['num_negatives'] = 0
  with pytest.raises(ValueError, match=r"variant='paper'.*\['squad-mt'\] have num_negatives=0"):
    train.train(config, tmp_path / 'w')
