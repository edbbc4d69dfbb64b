"""loglikelihood_shared: several queries after one shared prefix score as separate prompts do (1e-4 nats)."""

from __future__ import annotations

import numpy as np
import pytest

from icl_audio import engine
from icl_audio.engine import Target, loglikelihood, loglikelihood_shared


@pytest.fixture(scope="module")
def episode(debug_lm):
    """A shared prefix (instruction-like text, two demonstrations with a hidden <|eot_id|> each) and
    three queries: direct-like (query audio in the prefix, labels scored), channel-like (label context,
    audio scored) and one with an empty query prefix."""
    lm = debug_lm
    rng = np.random.default_rng(3)
    eot = lm.layout.special_ids["<|eot_id|>"]
    end = lm.layout.special_ids["<|SPEECH_GENERATION_END|>"]
    audio = lambda n: lm.layout.to_ids(rng.integers(0, 256, n)).tolist()  # noqa: E731
    shared = [lm.layout.special_ids["<|begin_of_text|>"]] + lm.text_ids("Classify.") + audio(40) + [end, eot] + audio(30) + [end, eot] + lm.text_ids("Query:")
    labels = [lm.text_ids(x) for x in ("dog", "door wood knock", "door wood creaks")]
    direct = (audio(25) + [end], [Target(tuple(lab) + (eot,)) for lab in labels])
    clip = audio(20)
    channel = (lm.text_ids("Label:"), [Target(tuple(lab) + tuple(clip) + (end,), len(lab)) for lab in labels])
    bare = ([], [Target(tuple(lab)) for lab in labels])
    return lm, shared, [direct, channel, bare], frozenset({eot})


# 16: several trie passes on the query's cache (plain: no cache, one prompt per query)
@pytest.mark.parametrize("path, max_batch_tokens", [("plain", 512), ("cached", 16), ("cached", 512), ("pruned", 16), ("pruned", 512), ("fused", 16), ("fused", 512)])
def test_shared_equals_separate_prompts(episode, path, max_batch_tokens):
    lm, shared, queries, hidden = episode
    got = loglikelihood_shared(lm, shared, queries, hidden_ids=hidden, path=path, max_batch_tokens=max_batch_tokens)
    assert len(got) == len(queries)
    for (prefix, conts), mine in zip(queries, got):
        # the reference: one prompt per query, on the plain path (no cache at all)
        ref = loglikelihood(lm, shared + list(prefix), conts, hidden_ids=hidden, path="plain")
        assert [n for _, n in mine] == [n for _, n in ref]
        assert max(abs(a - b) for (a, _), (b, _) in zip(mine, ref)) < 1e-4


def test_keys_and_values_of_the_shared_prefix_computed_once(episode, monkeypatch):
    lm, shared, queries, hidden = episode
    fed_lengths: list[int] = []
    original = engine.Executor._decode

    def counting(self, rows, **inputs):
        fed_lengths.append(int(inputs["input_ids"].shape[1]))
        return original(self, rows, **inputs)

    monkeypatch.setattr(engine.Executor, "_decode", counting)
    loglikelihood_shared(lm, shared, queries, hidden_ids=hidden, path="cached")
    n_shared = len([t for t in shared if t not in hidden])
    # The shared tokens are fed once; every other pass feeds a query's part or a trie (shorter).
    assert fed_lengths[0] == n_shared
    # then per query: its own prefix (if any), then its trie passes; nothing of the shared part again
    expected = [n_shared]
    for prefix, conts in queries:
        plan = engine.make_plan(shared + list(prefix), conts, hidden_ids=hidden)
        expected += ([len(prefix)] if prefix else []) + [len(p.tokens) for p in plan.passes]
    assert fed_lengths == expected


def test_unproven_path_falls_back_to_one_prompt_per_query(episode, monkeypatch):
    lm, shared, queries, hidden = episode
    decoder = lm.model.get_decoder()
    monkeypatch.delitem(decoder.__dict__, f"{engine._SHARED_MEMO}_cached", raising=False)

    def broken(self, plan):
        raise RuntimeError("a moved internal")

    monkeypatch.setattr(engine._SharedPrefixExecutor, "hidden_rows", broken)
    with pytest.warns(RuntimeWarning, match="shared-prefix scoring path"):
        got = loglikelihood_shared(lm, shared, queries, hidden_ids=hidden, path="cached")
    for (prefix, conts), mine in zip(queries, got):
        ref = loglikelihood(lm, shared + list(prefix), conts, hidden_ids=hidden, path="cached")
        assert max(abs(a - b) for (a, _), (b, _) in zip(mine, ref)) < 1e-9
    monkeypatch.delitem(decoder.__dict__, f"{engine._SHARED_MEMO}_cached")  # later tests prove again
