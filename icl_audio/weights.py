"""The one ``from_pretrained`` call of icl-audio's models, which refuses weights that do not fit.

transformers fills every parameter a checkpoint lacks with random values and ignores every tensor
it does not expect, and says so only in a log report (which icl-audio keeps quiet). A renamed
tensor, a checkpoint of another version of the architecture, or the wrong file in a folder would
then give meaningless predictions without a word. :func:`load_pretrained` asks transformers for its
loading report (``output_loading_info=True``) and refuses the model when any key is missing,
unexpected or of another shape.

What the report legitimately leaves out is left out: transformers removes from it the tied weights
(Llasa-1B's checkpoint has no ``lm_head``: it is the embedding matrix), the non-persistent buffers
(rotary frequencies, never saved), and the patterns of the model class's own
``_keys_to_ignore_on_load_missing`` / ``_keys_to_ignore_on_load_unexpected`` lists, before it
returns (transformers 5.13.0 to 5.25.0 read). Mismatched shapes are loaded with
``ignore_mismatched_sizes=True`` so that they come back in the report rather than as transformers'
generic error, and are refused here like the rest.

``check_weights=False`` (``--no-weight-check``) loads anyway and logs the same keys as a warning.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Iterable

from icl_audio.errors import ModelError

log = logging.getLogger("icl_audio")

_SHOWN = 3  # keys named per kind in a message


def load_pretrained(model_class: Any, folder: str | Path, *, label: str, check_weights: bool = True, **kwargs: Any):
    """``model_class.from_pretrained(folder, **kwargs)`` from local files only, quiet, with the loading
    report checked (:func:`check_report`). ``label`` names the model in messages ("LLM debug").

    Raises ModelError (one line) when the folder cannot be loaded, or when its weights do not match
    the architecture and ``check_weights`` is true. Never runs remote code.
    """
    from icl_audio.hub import quiet_transformers

    kwargs = {**kwargs, "local_files_only": True, "output_loading_info": True, "ignore_mismatched_sizes": True}
    try:
        with warnings.catch_warnings(), quiet_transformers():
            warnings.simplefilter("ignore")
            model, report = model_class.from_pretrained(str(folder), **kwargs)
    except Exception as exc:  # missing or damaged files, an unknown architecture: one line, cause kept for --debug
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelError(f"could not load {label} from {folder} ({type(exc).__name__}: {first})") from exc
    check_report(report, label=label, folder=folder, check_weights=check_weights)
    return model


def check_report(report: dict, *, label: str, folder: str | Path, check_weights: bool = True) -> None:
    """Refuse (ModelError) or, with ``check_weights=False``, log a warning for a loading report of
    ``from_pretrained(..., output_loading_info=True)`` that has missing, unexpected or mismatched keys."""
    missing = sorted(report.get("missing_keys") or ())
    unexpected = sorted(report.get("unexpected_keys") or ())
    mismatched = sorted(report.get("mismatched_keys") or ())
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
    if mismatched:
        shapes = [f"{key} {tuple(ckpt)} vs {tuple(model)}" for key, ckpt, model in mismatched]
        parts.append(f"{len(mismatched)} of another shape ({_first(shapes)})")
    what = f"the weights in {folder} do not fit {label}: {'; '.join(parts)} tensor names"
    if check_weights:
        raise ModelError(f"{what}; loaded, they would be random weights. Use the matching checkpoint, or "
                         "--no-weight-check (check_weights=False) to load it anyway")
    log.warning("warning: %s; loaded anyway (--no-weight-check): those weights are random", what)


def _first(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_SHOWN])
    return shown + (", ..." if len(keys) > _SHOWN else "")
