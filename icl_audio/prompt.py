"""The prompt stage: TOML templates, the context budget, and prompts built as token ids segment by segment.

A template (``prompts/*.toml``) gives, for each scoring direction, an ``instruction``, an ``example``
(one demonstration, containing ``{audio}`` and ``{label}`` exactly once each) and a ``separator``.
The query is the same ``example`` cut at the scored slot, so demonstrations and query can never
disagree in structure:

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from icl_audio.engine import Target
from icl_audio.errors import ICLAudioError
from icl_audio.families.llasa import TEMPLATE as LLASA_TEMPLATE

# A demonstration keeps at least this many audio tokens (1 s at 50 tokens/s) when the context is
# short; below that, the least similar demonstration is dropped instead of cropping further.
MIN_DEMO_TOKENS = 50
# When cropping, the query may keep up to this many times the share of one demonstration: it is
# the clip being classified.
QUERY_SHARE = 2

MODES = ("direct", "channel")
DEFAULT_TEMPLATE = LLASA_TEMPLATE  # the default model family's (icl_audio.families.llasa)
TEMPLATE_ALIASES = {"default": DEFAULT_TEMPLATE}  # the 0.1 name of the default template
# Added to Llasa's vocabulary but absent from every training sequence: untrained embeddings and output rows.
UNTRAINED_MARKUP = frozenset({"<|SPEECH_UNDERSTANDING_START|>", "<|SPEECH_UNDERSTANDING_END|>",
                              "<|TEXT_GENERATION_START|>", "<|TEXT_GENERATION_END|>"})
EOT = "<|eot_id|>"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
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
class Format:
    """One direction of a template: instruction (may use ``{labels}``), example, separator."""

    instruction: str
    example: str
    separator: str = ""


@dataclass(frozen=True)
class Template:
    """A prompt template as read from a TOML file (see ``prompts/README.md``)."""

    name: str
    description: str
    bos: bool
    direct: Format
    channel: Format
    labels_joiner: str
    source: str
    mask_eot: bool = False

    def format(self, mode: str) -> Format:
        """The :class:`Format` for ``mode`` ("direct" or "channel")."""
        if mode == "direct":
            return self.direct
        if mode == "channel":
            return self.channel
        raise ICLAudioError(f"unknown scoring mode {mode!r}: use direct or channel")


# --------------------------------------------------------------------------------------------
# templates


def templates_dir() -> Path:
    """The folder holding the built-in templates (``prompts/`` of the repository or the installed package)."""
    try:
        from importlib.resources import files

        folder = Path(str(files("icl_audio.prompts")))
        if (folder / f"{DEFAULT_TEMPLATE}.toml").is_file():
            return folder
    except (ImportError, ModuleNotFoundError, TypeError):
        pass
    # Editable checkout without the package mapping: prompts/ sits next to icl_audio/.
    return Path(__file__).resolve().parent.parent / "prompts"


def list_templates() -> list[str]:
    """Names of the built-in templates (usable as ``--template NAME``)."""
    return sorted(p.stem for p in templates_dir().glob("*.toml"))


def _toml_load(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ICLAudioError(f"template {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ICLAudioError(f"template {path} is not valid TOML: {exc}") from None


def _check_string(text: Any, where: str, allowed: set[str]) -> str:
    if not isinstance(text, str):
        raise ICLAudioError(f"{where} must be a string")
    for name in _PLACEHOLDER.findall(text):
        if name not in allowed:
            ok = ", ".join("{" + a + "}" for a in sorted(allowed)) or "none"
            raise ICLAudioError(f"{where} uses unknown placeholder {{{name}}} (allowed here: {ok})")
    return text


def _read_format(data: Any, src: str, mode: str) -> Format:
    if not isinstance(data, dict):
        raise ICLAudioError(f"template {src} needs a [{mode}] table with instruction, example and separator")
    unknown = set(data) - {"instruction", "example", "separator"}
    if unknown:
        raise ICLAudioError(f"template {src}: unknown key(s) in [{mode}]: {', '.join(sorted(unknown))}")
    if "example" not in data:
        raise ICLAudioError(f"template {src}: [{mode}] has no example")
    instruction = _check_string(data.get("instruction", ""), f"template {src}: [{mode}].instruction", {"labels"})
    example = _check_string(data["example"], f"template {src}: [{mode}].example", {"audio", "label", "end"})
    separator = _check_string(data.get("separator", ""), f"template {src}: [{mode}].separator", set())
    slots = _PLACEHOLDER.findall(example)
    if slots.count("audio") != 1 or slots.count("label") != 1:
        raise ICLAudioError(f"template {src}: [{mode}].example must contain {{audio}} and {{label}} once each")
    if slots.count("end") > 1:
        raise ICLAudioError(f"template {src}: [{mode}].example may contain {{end}} once")
    audio_first = slots.index("audio") < slots.index("label")
    scored_slot = slots.index("label") if mode == "direct" else slots.index("audio")
    if "end" in slots and slots.index("end") < scored_slot:
        raise ICLAudioError(f"template {src}: [{mode}].example must put {{end}} after the scored "
                            f"{'{label}' if mode == 'direct' else '{audio}'}")
    if mode == "direct" and not audio_first:
        raise ICLAudioError(f"template {src}: [direct].example must put {{audio}} before {{label}}")
    if mode == "channel" and audio_first:
        raise ICLAudioError(f"template {src}: [channel].example must put {{label}} before {{audio}}")
    return Format(instruction=instruction, example=example, separator=separator)


def load_template(name: str = DEFAULT_TEMPLATE) -> Template:
    """Read a template: a built-in name (``llasa``, ``uniaudio``; ``default`` = ``llasa``) or a path to a TOML file.

    Raises ICLAudioError (one line) for an unknown name, an unreadable file or an invalid template.
    """
    if isinstance(name, Path) or str(name).endswith(".toml") or "/" in str(name) or "\\" in str(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ICLAudioError(f"template file {path} does not exist")
    else:
        name = TEMPLATE_ALIASES.get(str(name), str(name))
        path = templates_dir() / f"{name}.toml"
        if not path.is_file():
            known = ", ".join(list_templates()) or "none found"
            raise ICLAudioError(f"unknown template {name!r} (built-in: {known}; or give a path to a .toml file)")
    data = _toml_load(path)
    src = str(path)
    unknown = set(data) - {"name", "description", "bos", "labels_joiner", "mask_eot", "direct", "channel"}
    if unknown:
        raise ICLAudioError(f"template {src}: unknown key(s) {', '.join(sorted(unknown))}")
    bos = data.get("bos", True)
    if not isinstance(bos, bool):
        raise ICLAudioError(f"template {src}: bos must be true or false")
    mask_eot = data.get("mask_eot", False)
    if not isinstance(mask_eot, bool):
        raise ICLAudioError(f"template {src}: mask_eot must be true or false")
    joiner = data.get("labels_joiner", ", ")
    if not isinstance(joiner, str):
        raise ICLAudioError(f"template {src}: labels_joiner must be a string")
    return Template(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        bos=bos,
        direct=_read_format(data.get("direct"), src, "direct"),
        channel=_read_format(data.get("channel"), src, "channel"),
        labels_joiner=joiner,
        source=src,
        mask_eot=mask_eot,
    )


# --------------------------------------------------------------------------------------------
# context budget


@dataclass(frozen=True)
class BudgetPlan:
    """How many demonstrations to keep (the first ``n_demos``, most similar first) and audio caps.

    ``demo_cap``/``query_cap`` are the most audio tokens a demonstration / the query keeps (None:
    uncropped).
    """

    n_demos: int
    demo_cap: int | None
    query_cap: int | None


def plan_budget(demo_lengths: Sequence[int], query_length: int, demo_overheads: Sequence[int],
                base_overhead: int, max_context: int, min_demo_tokens: int = MIN_DEMO_TOKENS) -> BudgetPlan:
    """Fit demonstrations and query into ``max_context`` tokens (pure function).

    ``demo_lengths``: audio tokens per demonstration, most similar first; ``demo_overheads``: the
    non-audio tokens each demonstration costs (markup, label, separator); ``base_overhead``: everything
    else (instruction, query markup, the longest candidate continuation without audio).

    Policy: keep everything if it fits. Otherwise crop all clips to a common cap ``c`` (the largest that
    fits), the query keeping up to ``QUERY_SHARE * c``. If ``c`` would fall below ``min_demo_tokens``,
    drop the least similar demonstration and try again. With no demonstrations left, the query alone
    is cropped to what remains. Labels and structure are never cut. Raises ICLAudioError when even the
    structure alone does not fit.
    """
    n = len(demo_lengths)
    for m in range(n, -1, -1):
        avail = max_context - base_overhead - sum(demo_overheads[:m])
        lens = list(demo_lengths[:m])
        if avail < 1:
            continue
        if sum(lens) + query_length <= avail:
            return BudgetPlan(m, None, None)
        if m == 0:
            return BudgetPlan(0, None, min(query_length, avail))

        def used(c: int) -> int:
            return sum(min(x, c) for x in lens) + min(query_length, QUERY_SHARE * c)

        lo, hi = 0, max(max(lens), -(-query_length // QUERY_SHARE))
        while lo < hi:  # largest c with used(c) <= avail
            mid = (lo + hi + 1) // 2
            if used(mid) <= avail:
                lo = mid
            else:
                hi = mid - 1
        c = lo
        if c >= min_demo_tokens or all(x <= c for x in lens) and c > 0:
            query_cap = min(query_length, QUERY_SHARE * c)
            # Give tokens the integer cap left unused to the query (it matters most).
            spare = avail - used(c)
            if query_cap < query_length and spare > 0:
                query_cap = min(query_length, query_cap + spare)
            return BudgetPlan(m, c, query_cap)
    structure = base_overhead
    raise ICLAudioError(
        f"the prompt structure alone needs {structure} tokens of the {max_context}-token context "
        f"(labels too long or too many for the template): raise max_context or shorten the labels"
    )


def crop_centre(codes: np.ndarray, cap: int | None) -> np.ndarray:
    """The middle ``cap`` codes of ``codes`` (all of them when shorter or ``cap`` is None).

    Centred because sound events in dataset clips tend to sit in the middle, with silence at the edges.
    """
    if cap is None or len(codes) <= cap:
        return codes
    start = (len(codes) - cap) // 2
    return codes[start:start + cap]


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
            elif _PLACEHOLDER.fullmatch(piece):
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
        return {"parts": parts, "label_space": label_space, "instruction": instruction, "separator": separator}

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

    def build(self, demos: Sequence[Demo], query_codes: np.ndarray, labels: Sequence[str], *,
              mode: str = "direct", max_context: int = 2048, content_free: bool = False) -> Prompt:
        """Build the prompt for one query.

        ``demos``: most similar first (they are placed in reverse, so the most similar sits right
        before the query: recency matters most to a causal LM). ``query_codes``: the query's codec
        codes. ``labels``: the candidates, one :class:`Target` each, in this order.
        ``content_free``: keep the same demonstrations and crops; direct mode gives the query no audio (the
        content-free input of contextual calibration), channel mode gives every candidate an empty label.
        The budget policy is :func:`plan_budget`; ``Prompt.demos_used``/``cropped`` report its effect.
        """
        if mode not in MODES:
            raise ICLAudioError(f"unknown scoring mode {mode!r}: use direct or channel")
        comp = self._compiled[mode]
        parts = comp["parts"]
        label_at = next(i for i, p in enumerate(parts) if p[0] == "label")
        audio_at = next(i for i, p in enumerate(parts) if p[0] == "audio")
        end_at = next((i for i, p in enumerate(parts) if p[0] == "end"), len(parts))
        to_ids = self.lm.layout.to_ids
        separator = [i for p in comp["separator"] for i in p[1]]

        bos_id = self.lm.layout.special_ids.get("<|begin_of_text|>", getattr(self.lm.tokenizer, "bos_token_id", None))
        start = ([bos_id] if self.template.bos and bos_id is not None else []) + self._instruction(mode, labels)
        label_tokens = [self.label_ids(lab, mode) for lab in labels]
        demo_label_tokens = [self.label_ids(d.label, mode) for d in demos]

        # Costs without audio, for the budget.
        no_audio: list[int] = []
        demo_over = [len(self._render(parts, no_audio, lt)) + len(separator) for lt in demo_label_tokens]
        if mode == "direct":
            query_struct = len(self._render(parts[:label_at], no_audio, ()))
            cont_struct = max(len(lt) + len(self._render(parts[label_at + 1:end_at], no_audio, ())) for lt in label_tokens)
        else:
            query_struct = len(self._render(parts[:label_at], no_audio, ()))
            cont_struct = max(len(lt) for lt in label_tokens) + len(self._render(parts[label_at + 1:end_at], no_audio, ()))
        base = len(start) + query_struct + cont_struct
        query_codes = np.asarray(query_codes)
        plan = plan_budget([len(d.codes) for d in demos], len(query_codes), demo_over, base, max_context)

        used = list(demos[: plan.n_demos])
        cropped = plan.query_cap is not None and plan.query_cap < len(query_codes)
        prefix = list(start)
        for d, lt in zip(reversed(used), reversed(demo_label_tokens[: plan.n_demos])):
            codes = crop_centre(np.asarray(d.codes), plan.demo_cap)
            cropped = cropped or len(codes) < len(d.codes)
            prefix += self._render(parts, to_ids(codes).tolist(), lt) + separator
        q = crop_centre(query_codes, plan.query_cap)
        q_ids = [] if content_free and mode == "direct" else to_ids(q).tolist()

        targets = []
        if mode == "direct":
            prefix += self._render(parts[:label_at], q_ids, ())
            tail = self._render(parts[label_at + 1:end_at], q_ids, ())
            targets = [Target(tuple(lt) + tuple(tail), 0) for lt in label_tokens]
        else:
            prefix += self._render(parts[:label_at], q_ids, ())
            middle = self._render(parts[label_at + 1:audio_at], (), ())
            rest = self._render(parts[audio_at:end_at], q_ids, ())
            if content_free:  # the same query audio after an empty label, once per candidate
                label_tokens = [()] * len(label_tokens)
            targets = [Target(tuple(lt) + tuple(middle) + tuple(rest), len(lt) + len(middle)) for lt in label_tokens]
        return Prompt(prefix=tuple(prefix), targets=tuple(targets), demos_used=plan.n_demos, cropped=bool(cropped),
                      query_tokens=len(q_ids) and len(q), hidden_ids=self.hidden_ids)


def build_prompt(lm: Any, demos: Sequence[Demo], query_codes: np.ndarray, labels: Sequence[str], *,
                 template: Template | str = DEFAULT_TEMPLATE, mode: str = "direct", max_context: int = 2048,
                 content_free: bool = False) -> Prompt:
    """One-off :meth:`PromptBuilder.build` (the Scorer keeps a builder to reuse tokenisation)."""
    return PromptBuilder(lm, template).build(demos, query_codes, labels, mode=mode, max_context=max_context,
                                             content_free=content_free)


def render_text(lm: Any, ids: Sequence[int]) -> str:
    """Human-readable text of prompt ids (markup and ``<|s_N|>`` spelled out), for debugging and docs."""
    return lm.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
