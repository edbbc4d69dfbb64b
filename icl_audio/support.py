"""Support sets: labelled clips as codes + embeddings + index, built once, stored atomically, found by name.

One module per job; this one gathers their public names, so ``from icl_audio import support`` is the
whole API:

- :mod:`icl_audio.support_set`: the :class:`SupportSet` and :class:`BuildReport` dataclasses, and the
  store's errors (they carry the set's name so a front end can add its own advice; the messages
  themselves name no command-line syntax);
- :mod:`icl_audio.support_encode`: encoding labelled clips with loaded models (:func:`encode_support`,
  :func:`build_support_set`);
- :mod:`icl_audio.support_store`: the on-disk store (save, load, list, remove; atomic and locked);
- :mod:`icl_audio.support_named`: named builds that refuse to mix models (:func:`build_named_set`);
- :mod:`icl_audio.support_spec`: what ``--support SPEC`` names (:func:`parse_support_spec`,
  :func:`open_support`).
"""

from __future__ import annotations

from icl_audio.support_encode import build_support_set, encode_support, model_meta
from icl_audio.support_named import build_named_set, check_models, stored_models
from icl_audio.support_set import (
    BuildReport, DamagedSetError, ModelMismatchError, NoSuchSetError, NotBuiltError, SupportSet,
)
from icl_audio.support_spec import SupportSource, open_support, parse_support_spec
from icl_audio.support_store import (
    FORMAT_VERSION, NAME_PATTERN, exists, list_support_sets, load_support_set, lock_for, read_manifest,
    remove_support_set, save_support_set, set_dir, validate_name,
)

__all__ = [
    "FORMAT_VERSION", "NAME_PATTERN", "BuildReport", "DamagedSetError", "ModelMismatchError", "NoSuchSetError",
    "NotBuiltError", "SupportSet", "SupportSource", "build_named_set", "build_support_set", "check_models",
    "encode_support", "exists", "list_support_sets", "load_support_set", "lock_for", "model_meta",
    "open_support", "parse_support_spec", "read_manifest", "remove_support_set", "save_support_set", "set_dir",
    "stored_models", "validate_name",
]
