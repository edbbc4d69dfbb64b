"""Where models come from: the torch device; one resolver that turns a model name (hub id, alias,
local folder or "debug") into a local folder, the id to report and a revision; quiet transformers
loading.

Shared by the codec and the LLM loaders, so that `--device`, `--model` and `--codec` read their
values by the same rules, fail with the same one-line messages, and mean the same by "revision".
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from icl_audio import paths
from icl_audio.constants import DEBUG_NAME
from icl_audio.errors import ModelError
from icl_audio.fsutil import atomic_write

if TYPE_CHECKING:
    import torch


def resolve_device(device: str = "auto") -> "torch.device":
    """The torch device for ``device``: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".

    Raises ModelError when CUDA is asked for and not available, or for an unknown name.
    """
    import torch

    name = str(device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} was asked for but CUDA is not available (torch {torch.__version__}); use --device cpu")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ModelError(f"invalid device {device!r}: {exc}") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a folder rather than a hub id ("name" or "org/name")."""
    # Hub ids are "name" or "org/name"; anything else with a separator or a leading ./~ is a path.
    return name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or "\\" in name or name.endswith("/")


# --------------------------------------------------------------------------------------------
# model names -> local folders


@dataclass(frozen=True)
class ModelSource:
    """A resolved model name.

    ``folder``: the local folder to load from (it holds ``config.json``). ``model_id``: the name to
    report (the hub id, the folder's absolute path, or "debug"). ``revision``: what exactly is in the
    folder: the hub commit for hub ids, a content hash (``folder-...``) for local folders, the debug
    build's version for "debug". ``origin``: "hub", "folder" or "debug".
    """

    folder: Path
    model_id: str
    revision: str
    origin: str


# What a hub snapshot fetches: configs, safetensors weights, tokenizer files (no duplicate .bin/.pth).
HUB_PATTERNS = ("*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt")


def resolve_model(
    name: str | os.PathLike,
    *,
    kind: str = "model",
    flag: str = "--model",
    aliases: Mapping[str, str] | None = None,
    debug_build: Callable[[], Path] | None = None,
    debug_revision: str | None = None,
    revision: str | None = None,
    patterns: Sequence[str] = HUB_PATTERNS,
) -> ModelSource:
    """Turn a model name into a :class:`ModelSource`, before any weights are read.

    ``name``: "debug" (``debug_build()`` builds or finds the folder; its revision is ``debug_revision``,
    or the folder's content hash when that is None), an alias (``aliases``, matched case-insensitively),
    a local folder (must hold ``config.json``), or a hub id "org/name" (read from the Hugging Face cache;
    downloaded only when the hub is reachable; ``revision`` is a branch, tag or commit, ignored
    otherwise). ``kind`` ("LLM", "codec") and ``flag`` ("--model", "--codec") word the messages.
    Raises ModelError (one line): a missing folder, a file, a folder without config.json, a hub id that
    is not cached and cannot be downloaded (naming the id, the cache searched and how to point at a
    local copy), a debug build that cannot be written.
    """
    name = str(name)
    if name == DEBUG_NAME and debug_build is not None:
        try:
            folder = Path(debug_build())
        except OSError as exc:
            raise ModelError(f"could not build the debug {kind} in {paths.models_dir()}: {exc}") from None
        _require_config(folder, f"the debug {kind} folder {folder}")
        return ModelSource(folder, DEBUG_NAME, debug_revision or folder_revision(folder), "debug")
    name = (aliases or {}).get(name.lower(), name)
    local = Path(name).expanduser()
    if local.is_dir():
        _require_config(local, f"{kind} folder {local}")
        return ModelSource(local.resolve(), str(local.resolve()), folder_revision(local), "folder")
    if local.exists():
        raise ModelError(f"{kind} path {local} is a file: give the folder holding config.json and the weights")
    if looks_like_path(name):
        raise ModelError(f"{kind} folder {name} does not exist: pass {flag} with a folder holding config.json "
                         f"and the weights, or a hub id")
    folder = _hub_snapshot(name, revision=revision, kind=kind, flag=flag, patterns=patterns)
    _require_config(folder, f"{kind} {name} (snapshot {folder})")
    return ModelSource(folder, name, folder.name, "hub")


def _require_config(folder: Path, what: str) -> None:
    if not (folder / "config.json").is_file():
        raise ModelError(f"{what} has no config.json: not a Hugging Face model folder")


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> str:
    """The Hugging Face hub cache folder that hub ids are looked up in."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_snapshot(repo_id: str, *, revision: str | None, kind: str, flag: str, patterns: Sequence[str]) -> Path:
    """The snapshot folder of ``repo_id`` in the HF cache (its name is the commit), downloading only
    when the hub is reachable."""
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    kwargs = dict(revision=revision, cache_dir=cache, allow_patterns=list(patterns))
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
    except Exception:  # not cached (or not a valid id): say so below, in one line
        pass
    rev = f" (revision {revision})" if revision else ""
    where = f"{kind} {repo_id}{rev} is not in the Hugging Face cache ({cache})"
    hint = (f"run `huggingface-cli download {repo_id}` on a connected machine and copy its cache, "
            f"or pass {flag} /path/to/folder holding a local copy")
    if hub_offline():
        raise ModelError(f"{where} and the hub is offline (HF_HUB_OFFLINE is set): {hint}")
    try:
        return Path(snapshot_download(repo_id, **kwargs))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"{where} and could not be downloaded ({type(exc).__name__}: {first}): {hint}") from None


# Files whose bytes decide what a model computes: weights, configs, tokenizer. Not README, not markers.
_HASHED_NAMES = frozenset({
    "config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt",
})
_MEMO_FILE = "folder-hashes.json"
_MEMO_MAX = 512  # entries kept (newest last): a test run creates many short-lived folders


def _hashed_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and (p.name in _HASHED_NAMES or p.suffix in (".safetensors", ".bin")
                            or p.name.endswith(".index.json"))
    )


def folder_revision(folder: str | os.PathLike) -> str:
    """A content hash of a model folder's weight, config and tokenizer files: ``folder-<40 hex>``.

    It stands in for a hub commit: equal for two copies of the same files, different as soon as one
    byte of them differs. Hashing a 3.5 GB model takes seconds, so each result is remembered per
    (folder, file names, sizes, mtimes) in ``paths.models_dir()/folder-hashes.json``: a folder is read
    once, and again only after a file in it changed.
    """
    folder = Path(folder).resolve()
    files = _hashed_files(folder)
    stats = [[p.name, st.st_size, st.st_mtime_ns] for p in files for st in (p.stat(),)]
    key = hashlib.sha256(json.dumps([str(folder), stats]).encode()).hexdigest()
    memo_path = paths.models_dir() / _MEMO_FILE
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    if isinstance(memo.get(key), str):
        return memo[key]
    digest = hashlib.sha256()
    for p, (name, size, _) in zip(files, stats):
        digest.update(f"{name}\0{size}\0".encode())  # name and length first: no two folders collide by splitting
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    value = "folder-" + digest.hexdigest()[:40]
    memo.pop(key, None)
    memo[key] = value
    memo = dict(list(memo.items())[-_MEMO_MAX:])
    try:
        atomic_write(memo_path, json.dumps(memo), durable=False)
    except OSError:
        pass  # only a speed-up
    return value


class quiet_transformers:
    """Silence transformers' progress bars and info chatter while loading (stderr is for our progress)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.bars = hf_logging.is_progress_bar_enabled()
        self.level = hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self.level)
        if self.bars:
            hf_logging.enable_progress_bar()
        return False
