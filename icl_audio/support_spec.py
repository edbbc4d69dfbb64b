"""What `--support SPEC` means, decided before any model loads, and opening it once models are loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from icl_audio.audio import DEFAULT_MAX_SECONDS
from icl_audio.errors import SupportSetError
from icl_audio.support_encode import build_support_set
from icl_audio.support_named import stored_models
from icl_audio.support_set import BuildReport, NotBuiltError, SupportSet
from icl_audio.support_store import NAME_PATTERN, exists, list_support_sets, load_support_set

if TYPE_CHECKING:
    from icl_audio.codec import Codec
    from icl_audio.codecache import CodeCache
    from icl_audio.llm import LanguageModel
    from icl_audio.recipes import Item


@dataclass(frozen=True)
class SupportSource:
    """What a ``--support SPEC`` names: clips to encode (``kind`` "folder", "csv" or "hf", with their
    ``items``) or a stored set (``kind`` "stored", with the ``model``/``codec`` it was built with)."""

    kind: str
    spec: str
    path: Path | None = None
    items: tuple["Item", ...] = ()
    model: str | None = None
    codec: str | None = None

    @property
    def stored(self) -> bool:
        return self.kind == "stored"


def parse_support_spec(spec: str) -> SupportSource:
    """Decide what ``spec`` names, reading folders and manifests only (no model, no audio).

    ``spec``: a folder with one sub-folder of clips per label, a CSV file (``path,label[,split]``),
    a Hugging Face dataset ``hf:OWNER/NAME[:CONFIG][@SPLIT]`` (or ``hf:/path/to/folder``: a
    ``save_to_disk`` or parquet folder; its label column the only ClassLabel column or the one named
    "label"; rows are not read, only their labels), or the name of a stored set. A bare name that is both a path here and a stored set is refused
    as ambiguous rather than guessed (``./name`` is always the path). Raises
    :class:`NotBuiltError` for a dataset recipe's name that was never built, and
    :class:`SupportSetError` for anything else that names nothing usable.
    """
    from icl_audio import recipes

    if not isinstance(spec, str) or not spec.strip():
        raise SupportSetError("the support spec is empty: give a folder, a CSV file or a stored set name")
    if spec.startswith("hf:"):
        from icl_audio import hfdata

        return SupportSource("hf", spec, items=tuple(hfdata.load_items(hfdata.parse_hf_spec(spec))))
    path = Path(spec).expanduser()
    is_path = path.is_dir() or (path.suffix.lower() == ".csv" and path.is_file())
    is_name = bool(NAME_PATTERN.match(spec)) and exists(spec)
    if is_path and is_name:
        raise SupportSetError(
            f"ambiguous support {spec!r}: it is both a {'folder' if path.is_dir() else 'file'} here and a stored "
            f"support set; use ./{spec} for the {'folder' if path.is_dir() else 'file'}, or rename it"
        )
    if is_path:
        if path.is_dir():
            return SupportSource("folder", spec, path, tuple(recipes.from_folder(path)))
        return SupportSource("csv", spec, path, tuple(recipes.from_csv(path)))
    if is_name:
        model, codec = stored_models(spec)
        return SupportSource("stored", spec, model=model, codec=codec)
    if spec in recipes.RECIPES:
        raise NotBuiltError(spec)
    if path.exists():
        raise SupportSetError(f"{spec}: not a folder of labelled sub-folders nor a .csv file")
    built = [m["name"] for m in list_support_sets() if "error" not in m]
    hint = f"stored sets: {', '.join(built)}" if built else "no support sets are stored yet"
    raise SupportSetError(f"{spec}: no such folder, CSV file or stored support set ({hint})")


def open_support(
    source: SupportSource,
    codec: "Codec",
    lm: "LanguageModel",
    *,
    cache: "CodeCache | None" = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    progress: Callable[[int], None] | None = None,
) -> tuple[SupportSet, BuildReport | None]:
    """The support set ``source`` names: a stored set is loaded (report ``None``); folder and CSV
    clips are encoded with the given, already-loaded models (codes through ``cache``)."""
    if source.stored:
        return load_support_set(source.spec), None
    where = {"spec": source.spec} if source.path is None else {"path": str(source.path.resolve())}
    return build_support_set(
        source.items, codec, lm, cache=cache, progress=progress, max_seconds=max_seconds,
        meta={"source": {"kind": source.kind, **where}},
    )
