"""No false negatives in training batches, counted with the *evaluator's* relevance rule, and
hosts whose slices of a batch are not correlated (issue: in-batch negatives that are really
negatives).

Relevance is LAReQA's (hybrid_ir.data.lareqa, the evaluator's reader): the passage of example j
(the answer sentence of question id g_j in language p_j) is relevant to the query of example i
when it is the answer sentence of g_i's id in p_j. The training store's passage identity is not
used to count, so this checks it.
"""
import numpy as np
import pytest

from hybrid_ir import data
from hybrid_ir import sampler as sampler_lib
from hybrid_ir import sharding
from hybrid_ir.data import lareqa

N_BATCHES = 10_000
BATCH = 32
TYPES = {'mono': {'mono': 1.0}, 'cross': {'cross': 1.0}, 'mixed': {'mixed': 1.0}}


@pytest.fixture(scope='module', params=['xquad-r', 'mlqa-r'])
def dataset(request, shared_data, tmp_path_factory):
  name = request.param
  store = data.open_store(dict(name=name, kind='squad', path=str(shared_data / name)),
                          tmp_path_factory.mktemp('stores'))
  ev = lareqa.load_lareqa(shared_data, name)
  # The evaluator's view of each training group: its relevant candidate in every language.
  row_of_id = {}
  for row, qid in enumerate(ev.question_ids):
    row_of_id.setdefault(qid, row)
  ids = store.group_ids(range(store.num_groups))
  relevant = np.stack([ev.relevant_by_lang[row_of_id[q]] for q in ids])  # [G, L] (-1: none)
  lang_index = {l: i for i, l in enumerate(ev.langs)}
  # The store's positive of (group, lang) is the evaluator's candidate of that (id, lang).
  for g in range(0, store.num_groups, 97):
    for l in store.langs:
      p_row = int(store.index(l).group_positive[g])
      if p_row >= 0:
        assert store.texts(l, [p_row])[0] == ev.cand_sentence[relevant[g, lang_index[l]]]
  para = np.array([hash((ev.cand_title[c], ev.cand_paragraph[c])) for c in
                   relevant[np.arange(len(ids)), np.argmax(relevant >= 0, axis=1)]])
  return name, sampler_lib.make_source(name, store, {}, 0), relevant, lang_index, para


def count_false_negatives(batch, relevant, lang_index):
  groups = batch['group']
  p_lang = np.array([lang_index[l] for l in batch['passage_lang']])
  cand = relevant[groups, p_lang]  # [B] the candidate each positive is
  rel = relevant[groups]  # [B, L] what each query counts as relevant
  hits = (rel[:, None, :] == cand[None, :, None]).any(-1)  # [i, j]
  np.fill_diagonal(hits, False)
  return int(hits.sum())


@pytest.mark.parametrize('batch_type', list(TYPES))
def test_no_false_negatives_in_10000_batches_on_one_and_two_hosts(dataset, batch_type):
  name, source, relevant, lang_index, _ = dataset
  config = {'batch_size': BATCH, 'seed': 1, 'type_probs': TYPES[batch_type]}
  one = sampler_lib.Sampler({name: source}, config)
  hosts = [sampler_lib.Sampler({name: source}, config) for _ in range(2)]  # two processes
  false_negatives = deferrals = 0
  for _ in range(N_BATCHES):
    batch = one.next_batch()
    slices = [sampler_lib.batch_rows(h.next_batch(), sharding.host_rows(BATCH, i, 2))
              for i, h in enumerate(hosts)]
    two = {k: np.concatenate([s[k] for s in slices]) for k in ('group', 'passage_lang')}
    np.testing.assert_array_equal(two['group'], batch['group'])
    false_negatives += count_false_negatives(batch, relevant, lang_index)
    false_negatives += count_false_negatives(two, relevant, lang_index)
  deferrals = one.deferrals
  assert false_negatives == 0
  # The sampler had real work to do: these sets have many questions sharing an answer.
  if name == 'xquad-r':
    assert deferrals > 1000


@pytest.mark.parametrize('hosts', [2, 4])
def test_host_slices_are_no_closer_than_random(dataset, hosts):
  name, source, _, _, para = dataset
  sampler = sampler_lib.Sampler({name: source}, {'batch_size': BATCH, 'seed': 1,
                                                 'type_probs': {'mono': 1.0}})
  near = same_para = 0
  expect_near = expect_para = var_near = var_para = 0.0
  for _ in range(1000):
    batch = sampler.next_batch()
    stream = sampler.streams[f'{name}|{batch["query_lang"][0]}|{batch["passage_lang"][0]}']
    eligible = np.arange(stream.size) if stream.groups is None else stream.groups
    # What independent uniform draws from this stream would give, per cross-host pair.
    _, sizes = np.unique(para[eligible], return_counts=True)
    n = len(eligible)
    p_near, p_para = 2 / n, float((sizes * (sizes - 1)).sum()) / (n * (n - 1))
    rank = np.searchsorted(eligible, batch['group'])  # position in the stream's group list
    slices = [np.arange(BATCH)[sharding.host_rows(BATCH, h, hosts)] for h in range(hosts)]
    for a in range(hosts):
      for b in range(a + 1, hosts):
        ia, ib = slices[a][:, None], slices[b][None, :]
        near += int((np.abs(rank[ia] - rank[ib]) <= 1).sum())
        same_para += int((para[batch['group'][ia]] == para[batch['group'][ib]]).sum())
        m = ia.size * ib.size
        expect_near += m * p_near
        expect_para += m * p_para
        var_near += m * p_near * (1 - p_near)
        var_para += m * p_para * (1 - p_para)
  # Hosts drawing in lockstep (the old per-host streams) put neighbours side by side: far above.
  assert near <= expect_near + 5 * np.sqrt(var_near) + 5, (near, expect_near)
  assert same_para <= expect_para + 5 * np.sqrt(var_para) + 5, (same_para, expect_para)
