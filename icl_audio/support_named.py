"""Named builds: items encoded into a stored set under its lock, refusing to mix models or codecs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from icl_audio.audio import DEFAULT_MAX_SECONDS
from icl_audio.support_encode import build_support_set
from icl_audio.support_set import ModelMismatchError, SupportSet
from icl_audio.support_store import _write_text, exists, lock_for, read_manifest, save_support_set, set_dir

if TYPE_CHECKING:
    from pathlib import Path

    from icl_audio.codec import Codec
    from icl_audio.codecache import CodeCache
    from icl_audio.llm import LanguageModel
    from icl_audio.recipes import Item

def check_models(name: str, *, model: str, codec: str) -> None:
    """Refuse (:class:`ModelMismatchError`) to build ``name`` with another model or codec than the
    stored set, or an interrupted build of it, used. Cheap (reads the manifest): call it before
    loading models; :func:`build_named_set` checks again under the lock."""
    previous = _built_with(name, set_dir(name))
    if previous is not None:
        for key, wanted in (("model", model), ("codec", codec)):
            if previous.get(key) != wanted:
                raise ModelMismatchError(name, key, str(previous.get(key)), wanted)


def _built_with(name: str, folder: Path) -> dict | None:
    if exists(name):
        manifest = read_manifest(name)
        return {key: manifest[key].get("requested", manifest[key].get("id")) for key in ("model", "codec")}
    try:
        previous = json.loads((folder / "building.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def build_named_set(
    name: str,
    items: Sequence["Item"],
    *,
    model: str,
    codec: str,
    lm: "LanguageModel",
    codec_model: "Codec",
    multi_label: bool | None = None,
    extra: Mapping[str, Any] | None = None,
    progress_factory: Callable[[int, str], Any] | None = None,
    cache: "CodeCache | None" = None,
    device: str | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> dict:
    """Build ``items`` into the stored set ``name`` under its lock, with already-loaded models.

    ``model``/``codec``: the names the user asked for (stored as ``requested``; a later build with
    other names is refused); ``lm``/``codec_model``: those models, loaded by the caller.
    ``cache``: the code cache (default: the shared one). ``device`` is ignored (the models come
    loaded; accepted for older callers). An interrupted build leaves a ``building.json`` marker and
    its codes in the code cache, so the next run with the same models resumes (only missing clips
    are encoded). Returns a summary: clips, labels, encoded, reused, skipped.
    """
    from icl_audio.codecache import CodeCache

    with lock_for(name):
        folder = set_dir(name)
        check_models(name, model=model, codec=codec)
        marker = folder / "building.json"
        _write_text(marker, json.dumps({"model": model, "codec": codec}))
        sset, report = build_support_set(
            items, codec_model, lm, cache=cache if cache is not None else CodeCache(), multi_label=multi_label,
            progress=progress_factory(len(items), f"encoding {name}") if progress_factory else None,
            max_seconds=max_seconds,  # the dataset's clip length in a bench (arch)
        )
        meta = dict(sset.meta)
        meta["model"] = {**meta["model"], "requested": model}
        meta["codec"] = {**meta["codec"], "requested": codec}
        sset = SupportSet(sset.sources, sset.labels, sset.codes, sset.embeddings, sset.multi_label, meta)
        manifest = save_support_set(name, sset, dict(extra or {}))
        marker.unlink(missing_ok=True)
    return {
        "clips": manifest["clips"],
        "labels": len(manifest["labels"]),
        "encoded": report.encoded,
        "reused": report.reused,
        "skipped": list(report.skipped),
    }



def stored_models(name: str) -> tuple[str, str]:
    """The (model id, codec id) a stored set was built with."""
    manifest = read_manifest(name)
    # "requested" is what the user named (e.g. "debug" or a hub id); "id" what it resolved to.
    model, codec = manifest["model"], manifest["codec"]
    return str(model.get("requested", model.get("id"))), str(codec.get("requested", codec.get("id")))

