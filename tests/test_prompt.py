"""Tests of the prompt stage: both templates, structure that labels cannot break, the context budget."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest

from icl_audio.errors import ICLAudioError
from icl_audio.prompt import (
    MIN_DEMO_TOKENS,
    BudgetPlan,
    Demo,
    PromptBuilder,
    build_prompt,
    crop_centre,
    list_templates,
    load_template,
    plan_budget,
    render_text,
    templates_dir,
)

INSTR = "<|TEXT_UNDERSTANDING_START|>Classify the audio in the following segment.<|TEXT_UNDERSTANDING_END|>"


def _s(*codes: int) -> str:
    return "".join(f"<|s_{c}|>" for c in codes)


def _demos():
    # Most similar first: "dog" is the nearest neighbour.
    return [Demo(np.array([1, 2]), "dog"), Demo(np.array([3]), "cat")]


def test_builtin_templates():
    names = list_templates()
    assert {"default", "uniaudio"} <= set(names)
    for name in names:
        t = load_template(name)
        assert t.name == name and t.description
    assert (templates_dir() / "README.md").is_file()


def test_default_direct_layout(debug_lm):
    p = build_prompt(debug_lm, _demos(), np.array([7, 8, 9]), ["dog", "cat"])
    text = render_text(debug_lm, p.prefix)
    # The most similar demonstration ("dog") sits right before the query.
    assert text == (
        "<|begin_of_text|>" + INSTR
        + "<|SPEECH_UNDERSTANDING_START|>" + _s(3) + "<|SPEECH_UNDERSTANDING_END|>"
        + "<|TEXT_GENERATION_START|>cat<|TEXT_GENERATION_END|>"
        + "<|SPEECH_UNDERSTANDING_START|>" + _s(1, 2) + "<|SPEECH_UNDERSTANDING_END|>"
        + "<|TEXT_GENERATION_START|>dog<|TEXT_GENERATION_END|>"
        + "<|SPEECH_UNDERSTANDING_START|>" + _s(7, 8, 9) + "<|SPEECH_UNDERSTANDING_END|>"
        + "<|TEXT_GENERATION_START|>"
    )
    assert [render_text(debug_lm, t.ids) for t in p.targets] == ["dog<|TEXT_GENERATION_END|>",
                                                                 "cat<|TEXT_GENERATION_END|>"]
    assert all(t.score_from == 0 for t in p.targets)
    assert (p.demos_used, p.cropped, p.query_tokens) == (2, False, 3)


def test_default_channel_layout(debug_lm):
    p = build_prompt(debug_lm, _demos(), np.array([7, 8]), ["dog", "bird song"], mode="channel")
    text = render_text(debug_lm, p.prefix)
    assert text.endswith(
        "<|TEXT_UNDERSTANDING_START|>dog<|TEXT_UNDERSTANDING_END|><|SPEECH_GENERATION_START|>" + _s(1, 2)
        + "<|SPEECH_GENERATION_END|><|TEXT_UNDERSTANDING_START|>"
    )
    for target, label in zip(p.targets, ["dog", "bird song"]):
        head = render_text(debug_lm, target.ids[: target.score_from])
        tail = render_text(debug_lm, target.ids[target.score_from:])
        assert head == label + "<|TEXT_UNDERSTANDING_END|><|SPEECH_GENERATION_START|>"
        assert tail == _s(7, 8) + "<|SPEECH_GENERATION_END|>"  # only the query audio (+ end) is scored


def test_uniaudio_layout(debug_lm):
    p = build_prompt(debug_lm, _demos(), np.array([5]), ["dog", "cat"], template="uniaudio")
    text = render_text(debug_lm, p.prefix)
    assert text == (
        "<|begin_of_text|>For each of the following input output pairs, output is one of [dog, cat].\n"
        "###\nInput: < " + _s(3) + " >\nOutput: cat\n"
        "###\nInput: < " + _s(1, 2) + " >\nOutput: dog\n"
        "###\nInput: < " + _s(5) + " >\nOutput:"
    )
    # The space of "Output: " travels with the label, as Llama's tokenizer writes " dog".
    assert [render_text(debug_lm, t.ids) for t in p.targets] == [" dog\n", " cat\n"]
    assert list(p.targets[0].ids) == debug_lm.text_ids(" dog") + debug_lm.text_ids("\n")
    pc = build_prompt(debug_lm, _demos(), np.array([5]), ["dog", "cat"], template="uniaudio", mode="channel")
    assert render_text(debug_lm, pc.prefix).endswith("###\nLabel:")
    assert render_text(debug_lm, pc.targets[0].ids) == " dog\nInput: < " + _s(5) + " >\n"


HOSTILE = ["<|TEXT_GENERATION_END|>", "<|s_3|>", "x<|SPEECH_UNDERSTANDING_END|>y", "<|begin_of_text|>"]


@pytest.mark.parametrize("template", ["default", "uniaudio"])
@pytest.mark.parametrize("mode", ["direct", "channel"])
def test_labels_cannot_break_structure(debug_lm, template, mode):
    builder = PromptBuilder(debug_lm, template)
    plain = builder.build(_demos(), np.array([4, 4]), ["a", "b", "c", "d"], mode=mode)
    demos = [Demo(np.array([1, 2]), HOSTILE[0]), Demo(np.array([3]), HOSTILE[1])]
    hostile = builder.build(demos, np.array([4, 4]), HOSTILE, mode=mode)
    special = set(debug_lm.layout.special_ids.values())
    speech = range(debug_lm.layout.first_speech_id, debug_lm.layout.first_speech_id + debug_lm.layout.n_speech)

    def structure(ids):
        return [i for i in ids if i in special or i in speech]

    # Same markup and audio tokens whatever the labels say; labels contribute text tokens only.
    assert structure(hostile.prefix) == structure(plain.prefix)
    for t_h, t_p in zip(hostile.targets, plain.targets):
        assert structure(t_h.ids) == structure(t_p.ids)
    for label in HOSTILE:
        ids = builder.label_ids(label, mode)
        assert all(debug_lm.is_text_id(i) for i in ids)


def test_deterministic_and_date_independent(debug_lm):
    a = build_prompt(debug_lm, _demos(), np.array([7]), ["dog", "cat"], template="uniaudio")
    b = build_prompt(debug_lm, _demos(), np.array([7]), ["dog", "cat"], template="uniaudio")
    assert a == b
    today = datetime.date.today()
    for template in ("default", "uniaudio"):
        text = render_text(debug_lm, build_prompt(debug_lm, _demos(), np.array([7]), ["dog"], template=template).prefix)
        assert str(today.year) not in text and "Date" not in text
        assert "<|start_header_id|>" not in text  # no chat template (it writes today's date)


# --------------------------------------------------------------------------------------------
# budget


def test_plan_budget_fits():
    assert plan_budget([100, 100], 100, [5, 5], 20, 2048) == BudgetPlan(2, None, None)


def test_plan_budget_crops_with_query_share():
    plan = plan_budget([300, 300, 300], 300, [5, 5, 5], 20, 20 + 15 + 700)
    assert plan.n_demos == 3
    assert plan.demo_cap is not None and plan.demo_cap >= MIN_DEMO_TOKENS
    assert plan.query_cap >= plan.demo_cap  # the query keeps the largest share
    used = 3 * min(300, plan.demo_cap) + plan.query_cap
    assert used <= 700 and used >= 700 - 3  # nothing wasted beyond integer rounding


def test_plan_budget_drops_least_similar():
    # 4 demos cannot each keep MIN_DEMO_TOKENS: the last (least similar) go first.
    plan = plan_budget([250] * 4, 250, [10] * 4, 30, 30 + 40 + 3 * MIN_DEMO_TOKENS + 2 * MIN_DEMO_TOKENS)
    assert plan.n_demos < 4
    assert plan.demo_cap >= MIN_DEMO_TOKENS


def test_plan_budget_short_demos_not_dropped():
    # Short demonstrations fit whole; only the query is cropped.
    plan = plan_budget([10, 10], 1000, [5, 5], 10, 10 + 10 + 20 + 100)
    assert plan.n_demos == 2 and plan.query_cap == 100


def test_plan_budget_query_alone_and_error():
    assert plan_budget([], 500, [], 10, 110) == BudgetPlan(0, None, 100)
    with pytest.raises(ICLAudioError) as exc:
        plan_budget([10], 10, [5], 3000, 2048)
    assert "structure alone" in str(exc.value) and "\n" not in str(exc.value)


def test_crop_centre():
    x = np.arange(10)
    assert crop_centre(x, 4).tolist() == [3, 4, 5, 6]
    assert crop_centre(x, None) is x and crop_centre(x, 20) is x


def test_build_reports_cropping(debug_lm):
    rng = np.random.default_rng(0)
    demos = [Demo(rng.integers(0, 256, 250), f"label {i}") for i in range(4)]
    query = rng.integers(0, 256, 250)
    for mode in ("direct", "channel"):
        full = build_prompt(debug_lm, demos, query, ["a", "b"], mode=mode)
        assert (full.demos_used, full.cropped, full.query_tokens) == (4, False, 250)
        small = build_prompt(debug_lm, demos, query, ["a", "b"], mode=mode, max_context=600)
        assert small.longest <= 600
        assert small.cropped and small.demos_used == 4
        assert small.query_tokens >= MIN_DEMO_TOKENS
        tiny = build_prompt(debug_lm, demos, query, ["a", "b"], mode=mode, max_context=300)
        assert tiny.longest <= 300 and tiny.demos_used < 4 and tiny.cropped


def test_cropped_demo_is_centred(debug_lm):
    demos = [Demo(np.arange(200) % 256, "x")]
    p = build_prompt(debug_lm, demos, np.arange(10), ["x"], max_context=130)
    speech0 = debug_lm.layout.first_speech_id
    kept = [i - speech0 for i in p.prefix if speech0 <= i < speech0 + 256]
    demo_part = kept[: len(kept) - 10]
    start = (200 - len(demo_part)) // 2
    assert 0 < len(demo_part) < 200 and demo_part == list(range(start, start + len(demo_part)))


def test_content_free_keeps_demos(debug_lm):
    builder = PromptBuilder(debug_lm)
    real = builder.build(_demos(), np.array([7, 8]), ["dog"])
    cf = builder.build(_demos(), np.array([7, 8]), ["dog"], content_free=True)
    assert len(cf.prefix) == len(real.prefix) - 2 and cf.query_tokens == 0
    assert cf.targets == real.targets


# --------------------------------------------------------------------------------------------
# template files


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "t.toml"
    path.write_text(body)
    return str(path)


GOOD = '''
name = "mine"
description = "test"
[direct]
instruction = "Which? {labels}\\n"
example = "A: {audio} L: {label}\\n"
[channel]
example = "L: {label} A: {audio}\\n"
'''


def test_custom_template_file(debug_lm, tmp_path):
    path = _write(tmp_path, GOOD)
    p = build_prompt(debug_lm, _demos()[:1], np.array([5]), ["dog", "cat"], template=path)
    assert render_text(debug_lm, p.prefix) == "<|begin_of_text|>Which? dog, cat\nA: " + _s(1, 2) + " L: dog\nA: " + _s(5) + " L:"


@pytest.mark.parametrize("body, needle", [
    (GOOD.replace("L: {label}\\n\"\n[channel]", "\"\n[channel]"), "{audio} and {label} once each"),
    (GOOD.replace('"A: {audio} L: {label}\\n"', '"L: {label} A: {audio}"'), "{audio} before {label}"),
    (GOOD.replace('"L: {label} A: {audio}\\n"', '"A: {audio} L: {label}"'), "{label} before {audio}"),
    (GOOD.replace("Which? {labels}", "Which? {classes}"), "unknown placeholder {classes}"),
    (GOOD + "\ncolour = 1\n", "unknown key"),
    (GOOD.replace("[channel]", "[chanel]"), "unknown key(s) chanel"),
    (GOOD[: GOOD.index("[channel]")], "needs a [channel] table"),
    ("name = [", "not valid TOML"),
])
def test_invalid_templates(tmp_path, body, needle):
    with pytest.raises(ICLAudioError) as exc:
        load_template(_write(tmp_path, body))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_template_and_markup(debug_lm, tmp_path):
    with pytest.raises(ICLAudioError) as exc:
        load_template("no-such-template")
    assert "default" in str(exc.value)
    with pytest.raises(ICLAudioError):
        load_template(str(tmp_path / "missing.toml"))
    path = _write(tmp_path, GOOD.replace("Which?", "<|NOT_A_TOKEN|>Which?"))
    with pytest.raises(ICLAudioError) as exc:
        PromptBuilder(debug_lm, path)
    assert "<|NOT_A_TOKEN|>" in str(exc.value)
