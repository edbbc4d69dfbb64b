"""Tests of the prompt stage: both templates, structure that labels cannot break, the context budget."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest

from icl_audio.errors import ICLAudioError
from icl_audio.prompt import (
    UNTRAINED_MARKUP,
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
    assert {"llasa", "uniaudio"} <= set(names)
    for name in names:
        t = load_template(name)
        assert t.name == name and t.description
    assert load_template("default").name == "llasa"  # the 0.1 name still works
    assert (templates_dir() / "README.md").is_file()


@pytest.mark.parametrize("name", ["llasa", "uniaudio"])
def test_no_shipped_template_uses_untrained_markup(name):
    text = (templates_dir() / f"{name}.toml").read_text()
    for token in UNTRAINED_MARKUP:
        assert token not in text


# Llasa's training sequence, written here from the documented format (Llama-3.2 chat template as
# LLaSA_training's train_tts.py applies it), independently of the template file and the builder.
SYSTEM = ("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
          "Today Date: 26 Jul 2024\n\n<|eot_id|>")


def _turns(label: str, speech: str) -> str:
    return ("<|start_header_id|>user<|end_header_id|>\n\nConvert the text to speech:"
            f"<|TEXT_UNDERSTANDING_START|>{label}<|TEXT_UNDERSTANDING_END|><|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
            f"<|SPEECH_GENERATION_START|>{speech}<|SPEECH_GENERATION_END|>")


def test_llasa_channel_golden(debug_lm):
    """Token for token Llasa's training format, against the real tokenizer encoding the whole string."""
    labels = ["dog", "bird song"]
    p = build_prompt(debug_lm, _demos(), np.array([7, 8, 9]), labels, template="llasa", mode="channel")
    demos_text = _turns("cat", _s(3)) + "<|eot_id|>" + _turns("dog", _s(1, 2)) + "<|eot_id|>"
    for target, label in zip(p.targets, labels):
        golden = debug_lm.tokenizer("<|begin_of_text|>" + SYSTEM + demos_text + _turns(label, _s(7, 8, 9)),
                                    add_special_tokens=False)["input_ids"]
        assert list(p.prefix) + list(target.ids) == golden
        # scored: the query's speech tokens and <|SPEECH_GENERATION_END|>
        first = debug_lm.layout.first_speech_id
        assert list(target.ids[target.score_from:]) == [first + 7, first + 8, first + 9,
                                                        debug_lm.layout.special_ids["<|SPEECH_GENERATION_END|>"]]
    eot = debug_lm.layout.special_ids["<|eot_id|>"]
    assert p.hidden_ids == frozenset({eot})  # as in training: no position attends to <|eot_id|>
    assert PromptBuilder(debug_lm, "llasa", mask_eot=False).build(_demos(), np.array([7]), labels,
                                                                  mode="channel").hidden_ids == frozenset()


def test_llasa_real_token_ids(debug_lm):
    """The debug model carries Llasa's exact tokenizer: the ids the real model sees."""
    p = build_prompt(debug_lm, [], np.array([0]), ["dog"], template="llasa", mode="channel")
    assert p.prefix[:3] == (128000, 128006, 9125)  # <|begin_of_text|><|start_header_id|>system
    assert 128009 in p.prefix and p.targets[0].ids[-2:] == (128264, 128261)  # <|s_0|>, SPEECH_GENERATION_END


def test_llasa_direct_layout(debug_lm):
    p = build_prompt(debug_lm, _demos(), np.array([7, 8, 9]), ["dog", "cat"], template="llasa")
    text = render_text(debug_lm, p.prefix)
    # The most similar demonstration ("dog") sits right before the query; speech only in SPEECH_GENERATION tags.
    assert text == (
        "<|begin_of_text|>" + INSTR
        + "<|SPEECH_GENERATION_START|>" + _s(3) + "<|SPEECH_GENERATION_END|>cat\n"
        + "<|SPEECH_GENERATION_START|>" + _s(1, 2) + "<|SPEECH_GENERATION_END|>dog\n"
        + "<|SPEECH_GENERATION_START|>" + _s(7, 8, 9) + "<|SPEECH_GENERATION_END|>"
    )
    assert [render_text(debug_lm, t.ids) for t in p.targets] == ["dog\n", "cat\n"]
    assert all(t.score_from == 0 for t in p.targets)
    assert (p.demos_used, p.cropped, p.query_tokens) == (2, False, 3)
    # scored: the label and its plain-text terminator, never markup
    assert all(debug_lm.is_text_id(i) for t in p.targets for i in t.ids)


def test_uniaudio_layout(debug_lm):
    p = build_prompt(debug_lm, _demos(), np.array([5]), ["dog", "cat"], template="uniaudio")
    text = render_text(debug_lm, p.prefix)

    def audio(*codes):
        return "<|SPEECH_GENERATION_START|>" + _s(*codes) + "<|SPEECH_GENERATION_END|>"

    assert text == (
        "<|begin_of_text|>For each of the following input output pairs, output is one of [dog, cat].\n"
        "###\nInput: < " + audio(3) + " >\nOutput: cat\n"
        "###\nInput: < " + audio(1, 2) + " >\nOutput: dog\n"
        "###\nInput: < " + audio(5) + " >\nOutput:"
    )
    # The space of "Output: " travels with the label, as Llama's tokenizer writes " dog".
    assert [render_text(debug_lm, t.ids) for t in p.targets] == [" dog\n", " cat\n"]
    assert list(p.targets[0].ids) == debug_lm.text_ids(" dog") + debug_lm.text_ids("\n")
    pc = build_prompt(debug_lm, _demos(), np.array([5]), ["dog", "cat"], template="uniaudio", mode="channel")
    assert render_text(debug_lm, pc.prefix).endswith("###\nLabel:")
    t = pc.targets[0]
    assert render_text(debug_lm, t.ids) == " dog\nInput: < " + audio(5)  # the query stops at {end}
    assert render_text(debug_lm, t.ids[t.score_from:]) == _s(5) + "<|SPEECH_GENERATION_END|>"


def test_untrained_markup_refused(debug_lm, tmp_path):
    path = _write(tmp_path, GOOD.replace("A: {audio} L:", "<|SPEECH_UNDERSTANDING_START|>{audio} L:"))
    with pytest.raises(ICLAudioError, match="never saw in training"):
        PromptBuilder(debug_lm, path)


HOSTILE = ["<|SPEECH_GENERATION_END|>", "<|s_3|>", "x<|eot_id|>y", "<|begin_of_text|>"]


@pytest.mark.parametrize("template", ["llasa", "uniaudio"])
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
    today = datetime.date.today().strftime("%d %b %Y")
    for template in ("llasa", "uniaudio"):
        for mode in ("direct", "channel"):
            p = build_prompt(debug_lm, _demos(), np.array([7]), ["dog"], template=template, mode=mode)
            assert today not in render_text(debug_lm, p.prefix)  # the system header's date is fixed


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
    # channel: the query keeps its audio, the label is empty
    real = builder.build(_demos(), np.array([7, 8]), ["dog", "cat"], mode="channel")
    cf = builder.build(_demos(), np.array([7, 8]), ["dog", "cat"], mode="channel", content_free=True)
    assert cf.prefix == real.prefix and cf.query_tokens == 2
    dog = len(builder.label_ids("dog", "channel"))
    assert cf.targets[0] == cf.targets[1] and cf.targets[0].ids == real.targets[0].ids[dog:]


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
    assert "llasa" in str(exc.value)
    with pytest.raises(ICLAudioError):
        load_template(str(tmp_path / "missing.toml"))
    path = _write(tmp_path, GOOD.replace("Which?", "<|NOT_A_TOKEN|>Which?"))
    with pytest.raises(ICLAudioError) as exc:
        PromptBuilder(debug_lm, path)
    assert "<|NOT_A_TOKEN|>" in str(exc.value)
