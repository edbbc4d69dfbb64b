"""The prompt stage: prompts built as token ids, segment by segment, from a template and the context budget.

Templates are read by :mod:`icl_audio.prompt_templates`; the budget (how many demonstrations fit, how
much of each clip is kept) is :mod:`icl_audio.prompt_budget`. A template's ``example`` is one
demonstration; the query is the same ``example`` cut at the scored slot, so demonstrations and query
can never disagree in structure:

    direction  example order    shared prefix ends with         each candidate continuation
    direct     {audio}..{label}  ...query audio...<up to label>  label + rest of example      (all scored)
    channel    {label}..{audio}  ...<up to label>               label + middle (not scored) + query audio + rest (scored)

An optional ``{end}`` in the example marks where the query's copy stops (the demonstrations ignore it):
Llasa's channel format scores the query's speech and ``<|SPEECH_GENERATION_END|>``, not the turn's
closing ``<|eot_id|>``.

Prompts are built as token ids, never as one string handed to the tokenizer: markup written in the
template (``<|TEXT_UNDERSTANDING_START|>`` ...) becomes the real special token, labels (user data) are
tokenised as plain text with :meth:`LanguageModel.text_ids`, audio becomes speech-token ids. A label
spelling ``<|SPEECH_GENERATION_END|>`` therefore stays text and cannot break the structure.
Nothing depends on the date (no chat template is run: the Llama-3.2 system header is written into
the template with a fixed date). Markup Llasa never saw in training (:data:`UNTRAINED_MARKUP`) is
refused in any template.

Two builds: :meth:`PromptBuilder.build` (one query, its retrieved demonstrations) and
:meth:`PromptBuilder.build_episode` (an N-way K-shot episode: every query of the episode after the
same demonstrations, cropped once, so that the engine computes their keys and values once:
:func:`icl_audio.engine.loglikelihood_shared`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from icl_audio.constants import LLASA_CONTEXT
from icl_audio.engine import Target
from icl_audio.errors import ICLAudioError
from icl_audio.prompt_budget import MIN_DEMO_TOKENS, QUERY_SHARE, BudgetPlan, crop_centre, plan_budget
from icl_audio.prompt_templates import (
    DEFAULT_TEMPLATE, MODES, PLACEHOLDER, TEMPLATE_ALIASES, UNTRAINED_MARKUP, Format, Template, list_templates,
    load_template, templates_dir,
)

__all__ = [
    "DEFAULT_TEMPLATE", "MODES", "MIN_DEMO_TOKENS", "QUERY_SHARE", "TEMPLATE_ALIASES", "UNTRAINED_MARKUP",
    "BudgetPlan", "Demo", "EpisodePrompt", "Format", "Prompt", "PromptBuilder", "QueryPart", "Template",
    "build_prompt", "crop_centre", "list_templates", "load_template", "plan_budget", "render_text", "templates_dir",
]

EOT = "<|eot_id|>"
_MARKUP = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_SPLIT = re.compile(r"(\{[A-Za-z_]+\}|<\|[A-Za-z0-9_]+\|>)")


# --------------------------------------------------------------------------------------------
# data passed between stages


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity (codes is an array)
class Demo:
    """One demonstration: the codec codes of a support clip and its label text."""

    codes: np.ndarray
    label: str


@dataclass(frozen=True)
class Prompt:
    """A built prompt: the shared prefix and one :class:`Target` per candidate label (in label order).

    ``demos_used`` demonstrations were placed (fewer than given when the context was too short);
    ``cropped`` is True when any audio (demonstration or query) was shortened to fit ``max_context``.
    ``query_tokens`` is the number of query audio tokens kept. ``hidden_ids``: token ids that keep their
    position but are never attended to (``<|eot_id|>`` when the template masks it, as Llasa's training did).
    """

    prefix: tuple[int, ...]
    targets: tuple[Target, ...]
    demos_used: int
    cropped: bool
    query_tokens: int
    hidden_ids: frozenset = frozenset()

    @property
    def longest(self) -> int:
        """Length of the longest sequence the model sees (prefix + longest continuation)."""
        return len(self.prefix) + max((len(t.ids) for t in self.targets), default=0)


@dataclass(frozen=True)
class QueryPart:
    """One query of an episode: what follows the shared demonstrations (``prefix``), and one
    :class:`Target` per candidate label. ``query_tokens``: query audio tokens kept; ``cropped``: the
    query's audio was shortened."""

    prefix: tuple[int, ...]
    targets: tuple[Target, ...]
    query_tokens: int
    cropped: bool


@dataclass(frozen=True)
class EpisodePrompt:
    """An episode's prompts: ``shared`` (instruction and every demonstration, cropped once) then, per
    query, its :class:`QueryPart`. Query ``j`` sees exactly ``shared + queries[j].prefix`` and its
    targets, as :meth:`prompt` spells out.

    ``demo_tokens``: audio tokens kept of each demonstration, in prompt order (0 for one that did not
    fit at all); ``demos_used``: demonstrations placed; ``cropped``: some demonstration was shortened.
    """

    shared: tuple[int, ...]
    queries: tuple[QueryPart, ...]
    demo_tokens: tuple[int, ...]
    demos_used: int
    cropped: bool
    hidden_ids: frozenset = frozenset()

    def prompt(self, j: int) -> Prompt:
        """Query ``j``'s prompt as one :class:`Prompt` (what :meth:`PromptBuilder.build` would return)."""
        q = self.queries[j]
        return Prompt(prefix=self.shared + q.prefix, targets=q.targets, demos_used=self.demos_used,
                      cropped=self.cropped or q.cropped, query_tokens=q.query_tokens, hidden_ids=self.hidden_ids)


@dataclass(frozen=True)
class _Layout:
    """The token parts of one build that do not depend on audio: start, label ids, costs without audio."""

    mode: str
    start: tuple[int, ...]
    label_tokens: tuple[tuple[int, ...], ...]
    demo_label_tokens: tuple[tuple[int, ...], ...]
    demo_overheads: tuple[int, ...]
    base_overhead: int


# --------------------------------------------------------------------------------------------
# building prompts


class PromptBuilder:
    """Builds :class:`Prompt` objects for one language model and one template.

    Template text is tokenised once; label token ids are cached (labels repeat across queries).
    """

    def __init__(self, lm: Any, template: Template | str = DEFAULT_TEMPLATE, *, mask_eot: bool | None = None):
        self.lm = lm
        self.template = load_template(template) if isinstance(template, (str, Path)) else template
        self.mask_eot = self.template.mask_eot if mask_eot is None else bool(mask_eot)
        eot = lm.layout.special_ids.get(EOT)
        if self.mask_eot and eot is None:
            raise ICLAudioError(f"mask_eot: {lm.model_id} has no {EOT} token")
        self.hidden_ids = frozenset({eot}) if self.mask_eot else frozenset()
        self._label_cache: dict[str, tuple[int, ...]] = {}
        self._compiled = {mode: self._compile(self.template.format(mode), mode) for mode in MODES}

    # -- compilation of template strings into token parts

    def _literal(self, text: str, where: str) -> list[Any]:
        """Template text -> parts: markup tokens become their special ids, the rest plain text."""
        out: list[Any] = []
        for piece in _SPLIT.split(text):
            if not piece:
                continue
            if _MARKUP.fullmatch(piece):
                if piece in UNTRAINED_MARKUP:
                    raise ICLAudioError(
                        f"template {self.template.source}: {where} uses {piece}, which Llasa never saw in training "
                        f"(its embedding is untrained): use TEXT_UNDERSTANDING or SPEECH_GENERATION markup"
                    )
                if piece not in self.lm.layout.special_ids:
                    raise ICLAudioError(
                        f"template {self.template.source}: {where} uses {piece}, which is not a special token of "
                        f"{self.lm.model_id}"
                    )
                out.append(("ids", (self.lm.layout.special_ids[piece],)))
            elif PLACEHOLDER.fullmatch(piece):
                out.append((piece[1:-1],))
            else:
                out.append(("ids", tuple(self.lm.text_ids(piece))))
        return out

    def _compile(self, fmt: Format, mode: str):
        example = fmt.example
        # Llama's tokenizer writes " dog" as one token: a space written right before {label} is
        # tokenised with the label (as lm-evaluation-harness does with continuations), not alone.
        label_space = ""
        i = example.index("{label}")
        if i > 0 and example[i - 1] == " ":
            example = example[: i - 1] + example[i:]
            label_space = " "
        parts = tuple(self._literal(example, f"[{mode}].example"))
        instruction = tuple(self._literal(fmt.instruction, f"[{mode}].instruction"))
        separator = tuple(self._literal(fmt.separator, f"[{mode}].separator"))
        slots = [p[0] for p in parts]
        return {"parts": parts, "label_space": label_space, "instruction": instruction, "separator": separator,
                "label_at": slots.index("label"), "audio_at": slots.index("audio"),
                "end_at": slots.index("end") if "end" in slots else len(parts),
                "separator_ids": [i for p in separator for i in p[1]]}

    def label_ids(self, label: str, mode: str = "direct") -> tuple[int, ...]:
        """Plain-text token ids of ``label`` as written in ``mode``'s example (leading space included)."""
        key = self._compiled[mode]["label_space"] + label
        ids = self._label_cache.get(key)
        if ids is None:
            ids = tuple(self.lm.text_ids(key))
            self._label_cache[key] = ids
        return ids

    @staticmethod
    def _render(parts, audio: Sequence[int], label: Sequence[int]) -> list[int]:
        out: list[int] = []
        for part in parts:
            if part[0] == "ids":
                out.extend(part[1])
            elif part[0] == "audio":
                out.extend(audio)
            elif part[0] == "label":
                out.extend(label)
        return out

    def _instruction(self, mode: str, labels: Sequence[str]) -> list[int]:
        out: list[int] = []
        for part in self._compiled[mode]["instruction"]:
            if part[0] == "ids":
                out.extend(part[1])
            elif part[0] == "labels":  # user data: plain text, never markup
                out.extend(self.lm.text_ids(self.template.labels_joiner.join(labels)))
        return out

    # -- the parts of a build

    def _layout(self, mode: str, labels: Sequence[str], demo_labels: Sequence[str]) -> _Layout:
        """Everything of a prompt but its audio, and what it costs (for :func:`plan_budget`)."""
        if mode not in MODES:
            raise ICLAudioError(f"unknown scoring mode {mode!r}: use direct or channel")
        comp = self._compiled[mode]
        parts, label_at, end_at = comp["parts"], comp["label_at"], comp["end_at"]
        bos_id = self.lm.layout.special_ids.get("<|begin_of_text|>", getattr(self.lm.tokenizer, "bos_token_id", None))
        start = ([bos_id] if self.template.bos and bos_id is not None else []) + self._instruction(mode, labels)
        label_tokens = tuple(self.label_ids(lab, mode) for lab in labels)
        demo_label_tokens = tuple(self.label_ids(lab, mode) for lab in demo_labels)
        # Costs without audio, for the budget.
        no_audio: list[int] = []
        demo_over = tuple(len(self._render(parts, no_audio, lt)) + len(comp["separator_ids"]) for lt in demo_label_tokens)
        query_struct = len(self._render(parts[:label_at], no_audio, ()))
        rest = len(self._render(parts[label_at + 1:end_at], no_audio, ()))
        # direct: label + rest of the example; channel: the same count (the audio is budgeted apart).
        cont_struct = max(len(lt) for lt in label_tokens) + rest
        return _Layout(mode, tuple(start), label_tokens, demo_label_tokens, demo_over,
                       len(start) + query_struct + cont_struct)

    def _demo_ids(self, mode: str, codes: np.ndarray, label_tokens: Sequence[int]) -> list[int]:
        comp = self._compiled[mode]
        return self._render(comp["parts"], self.lm.layout.to_ids(codes).tolist(), label_tokens) + comp["separator_ids"]

    def _query_part(self, lay: _Layout, q_ids: Sequence[int], content_free: bool = False
                    ) -> tuple[list[int], tuple[Target, ...]]:
        """What follows the demonstrations for one query: its prefix and one target per candidate."""
        comp = self._compiled[lay.mode]
        parts, label_at, audio_at, end_at = comp["parts"], comp["label_at"], comp["audio_at"], comp["end_at"]
        prefix = self._render(parts[:label_at], q_ids, ())
        if lay.mode == "direct":
            tail = tuple(self._render(parts[label_at + 1:end_at], q_ids, ()))
            return prefix, tuple(Target(tuple(lt) + tail, 0) for lt in lay.label_tokens)
        middle = tuple(self._render(parts[label_at + 1:audio_at], (), ()))
        rest = tuple(self._render(parts[audio_at:end_at], q_ids, ()))
        # content-free: the same query audio after an empty label, once per candidate
        label_tokens = [()] * len(lay.label_tokens) if content_free else lay.label_tokens
        return prefix, tuple(Target(tuple(lt) + middle + rest, len(lt) + len(middle)) for lt in label_tokens)

    # -- builds

    def build(self, demos: Sequence[Demo], query_codes: np.ndarray, labels: Sequence[str], *,
              mode: str = "direct", max_context: int = LLASA_CONTEXT, content_free: bool = False) -> Prompt:
        """Build the prompt for one query.

        ``demos``: most similar first (they are placed in reverse, so the most similar sits right
        before the query: recency matters most to a causal LM). ``query_codes``: the query's codec
        codes. ``labels``: the candidates, one :class:`Target` each, in this order.
        ``content_free``: keep the same demonstrations and crops; direct mode gives the query no audio (the
        content-free input of contextual calibration), channel mode gives every candidate an empty label.
        The budget policy is :func:`plan_budget`; ``Prompt.demos_used``/``cropped`` report its effect.
        """
        lay = self._layout(mode, labels, [d.label for d in demos])
        query_codes = np.asarray(query_codes)
        plan = plan_budget([len(d.codes) for d in demos], len(query_codes), lay.demo_overheads, lay.base_overhead,
                           max_context)
        cropped = plan.query_cap is not None and plan.query_cap < len(query_codes)
        prefix = list(lay.start)
        for d, lt in zip(reversed(demos[: plan.n_demos]), reversed(lay.demo_label_tokens[: plan.n_demos])):
            codes = crop_centre(np.asarray(d.codes), plan.demo_cap)
            cropped = cropped or len(codes) < len(d.codes)
            prefix += self._demo_ids(mode, codes, lt)
        q = crop_centre(query_codes, plan.query_cap)
        q_ids = [] if content_free and mode == "direct" else self.lm.layout.to_ids(q).tolist()
        query_prefix, targets = self._query_part(lay, q_ids, content_free)
        return Prompt(prefix=tuple(prefix + query_prefix), targets=targets, demos_used=plan.n_demos,
                      cropped=bool(cropped), query_tokens=len(q_ids) and len(q), hidden_ids=self.hidden_ids)

    def build_episode(self, demos: Sequence[Demo], queries: Sequence[np.ndarray], labels: Sequence[str], *,
                      mode: str = "direct", max_context: int = LLASA_CONTEXT) -> EpisodePrompt:
        """Build every query's prompt of an N-way K-shot episode after one shared demonstration prefix.

        ``demos``: the episode's support clips IN PROMPT ORDER (the first is placed first; an episode
        shows all of them in one seeded order, not by similarity). ``queries``: each query's codes.
        ``labels``: the candidates (the episode's N classes), one :class:`Target` each, in this order.

        The budget is planned ONCE for the episode, against its longest query, so that every query
        sees the same demonstrations cropped the same way. An episode keeps every demonstration
        (cropping each down to one token if it must: K-shot means K shown) rather than dropping the
        least similar as :meth:`build` does; only when not even one token each fits are the first
        ones dropped (``demos_used`` says so). Each query keeps up to ``QUERY_SHARE`` times a
        demonstration's share, plus what the integer cap leaves unused.
        """
        if not queries:
            raise ICLAudioError("an episode needs at least one query")
        lay = self._layout(mode, labels, [d.label for d in demos])
        queries = [np.asarray(q) for q in queries]
        # Planned with the demonstrations nearest the query first, so that what cannot fit at all is
        # what stands farthest from the queries.
        plan = plan_budget([len(d.codes) for d in reversed(demos)], max(len(q) for q in queries),
                           lay.demo_overheads[::-1], lay.base_overhead, max_context, min_demo_tokens=1)
        shown = len(demos) - plan.n_demos  # the first shown demonstration's position
        shared = list(lay.start)
        kept = [0] * len(demos)
        cropped = False
        for i in range(shown, len(demos)):
            codes = crop_centre(np.asarray(demos[i].codes), plan.demo_cap)
            kept[i] = len(codes)
            cropped = cropped or len(codes) < len(demos[i].codes)
            shared += self._demo_ids(mode, codes, lay.demo_label_tokens[i])
        parts = []
        for q in queries:
            kept_q = crop_centre(q, plan.query_cap)
            prefix, targets = self._query_part(lay, self.lm.layout.to_ids(kept_q).tolist())
            parts.append(QueryPart(tuple(prefix), targets, len(kept_q), len(kept_q) < len(q)))
        return EpisodePrompt(shared=tuple(shared), queries=tuple(parts), demo_tokens=tuple(kept),
                             demos_used=plan.n_demos, cropped=cropped, hidden_ids=self.hidden_ids)


def build_prompt(lm: Any, demos: Sequence[Demo], query_codes: np.ndarray, labels: Sequence[str], *,
                 template: Template | str = DEFAULT_TEMPLATE, mode: str = "direct", max_context: int = LLASA_CONTEXT,
                 content_free: bool = False) -> Prompt:
    """One-off :meth:`PromptBuilder.build` (the Scorer keeps a builder to reuse tokenisation)."""
    return PromptBuilder(lm, template).build(demos, query_codes, labels, mode=mode, max_context=max_context,
                                             content_free=content_free)


def render_text(lm: Any, ids: Sequence[int]) -> str:
    """Human-readable text of prompt ids (markup and ``<|s_N|>`` spelled out), for debugging and docs."""
    return lm.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
