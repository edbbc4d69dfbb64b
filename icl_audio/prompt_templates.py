"""Prompt templates: the TOML files of ``prompts/`` read and checked into :class:`Template` objects.

A template gives, for each scoring direction, an ``instruction``, an ``example`` (one demonstration,
containing ``{audio}`` and ``{label}`` exactly once each, and optionally ``{end}``) and a
``separator``; :mod:`icl_audio.prompt` turns it into token ids. Everything here is checked when the
file is read, so a bad template is one line before any model loads. Markup Llasa never saw in
training (:data:`UNTRAINED_MARKUP`) is refused by the builder, which knows the model's tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icl_audio.constants import SCORING_MODES as MODES  # noqa: F401 (re-exported)
from icl_audio.errors import ICLAudioError
from icl_audio.families.llasa import TEMPLATE as LLASA_TEMPLATE

DEFAULT_TEMPLATE = LLASA_TEMPLATE  # the default model family's (icl_audio.families.llasa)
TEMPLATE_ALIASES = {"default": DEFAULT_TEMPLATE}  # the 0.1 name of the default template
# Added to Llasa's vocabulary but absent from every training sequence: untrained embeddings and output rows.
UNTRAINED_MARKUP = frozenset({"<|SPEECH_UNDERSTANDING_START|>", "<|SPEECH_UNDERSTANDING_END|>",
                              "<|TEXT_GENERATION_START|>", "<|TEXT_GENERATION_END|>"})
PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")


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
    for name in PLACEHOLDER.findall(text):
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
    slots = PLACEHOLDER.findall(example)
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
