"""Hidden tokens keep their position, so the prompt's position ids jump: without a mask and a cache,
transformers would take such a forward for a packed sequence and cut the context at the jump. Every
path must score as one full forward under Llasa's training mask (ids != <|eot_id|>)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icl_audio.engine import Target, loglikelihood, make_plan


def _full_forward(lm, prefix, cont, hidden):
    """Independent reference: the model's own forward and head, a 2-D attention mask of ids != hidden."""
    seq = list(prefix) + list(cont)
    mask = torch.tensor([[int(x not in hidden) for x in seq]])
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([seq]), attention_mask=mask).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(prefix) - 1 + j, cont[j]]) for j in range(len(cont)))


@pytest.fixture(scope="module")
def prompt(debug_lm):
    lm = debug_lm
    eot = lm.layout.special_ids["<|eot_id|>"]
    prefix = [lm.layout.special_ids["<|begin_of_text|>"]] + lm.layout.to_ids(
        np.random.default_rng(4).integers(0, 256, 120)).tolist()
    prefix[30] = prefix[77] = eot  # hidden: positions 31.. and 78.. follow a jump
    return lm, prefix, eot


@pytest.mark.parametrize("path", ["plain", "cached", "pruned", "fused"])
def test_no_trie_pass_and_hidden_tokens_in_the_prompt(prompt, path):
    lm, prefix, eot = prompt
    end = lm.layout.special_ids["<|SPEECH_GENERATION_END|>"]
    conts = [[end], lm.text_ids("a")[:1], [lm.layout.to_ids(np.array([7]))[0]]]  # one token each: no trie pass
    plan = make_plan(prefix, conts, hidden_ids=[eot])
    assert not plan.passes and plan.prefix_positions[-1] == len(prefix) - 1
    assert np.any(np.diff(plan.prefix_positions) > 1)  # the positions jump
    got = loglikelihood(lm, prefix, conts, hidden_ids=[eot], path=path)
    for (score, n), cont in zip(got, conts):
        assert n == 1 and abs(score - _full_forward(lm, prefix, cont, {eot})) < 1e-4


@pytest.mark.parametrize("path", ["cached", "pruned", "fused"])
def test_trie_passes_after_hidden_tokens(prompt, path):
    lm, prefix, eot = prompt
    end = lm.layout.special_ids["<|SPEECH_GENERATION_END|>"]
    conts = [Target(tuple(lm.text_ids(lab)) + (end,)) for lab in ("dog", "door knock", "crackling fire")]
    assert len(make_plan(prefix, conts, hidden_ids=[eot], max_batch_tokens=2).passes) >= 2
    got = loglikelihood(lm, prefix, conts, hidden_ids=[eot], path=path, max_batch_tokens=2)
    for (score, _), cont in zip(got, conts):
        assert abs(score - _full_forward(lm, prefix, cont.ids, {eot})) < 1e-4
