"""Where models come from: one resolver that turns a model name (hub id, alias, local folder, or a
locally built model such as "debug") into a local folder, the id to report and a revision; the hub
as it is (gated repositories, partial caches, offline); quiet transformers loading.

Shared by the codec and the LLM loaders, so that ``--model`` and ``--codec`` read their values by
the same rules, fail with the same one-line messages, and mean the same by "revision".
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
from icl_audio.devices import resolve_device  # noqa: F401 (re-exported: its old home)
from icl_audio.errors import ModelError
from icl_audio.fsutil import atomic_write

if TYPE_CHECKING:
    from icl_audio.families import LocalBuild


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
    report (the hub id, the folder's absolute path, or the local build's name such as "debug").
    ``revision``: what exactly is in the folder: the hub commit for hub ids, a content hash
    (``folder-...``) for local folders, the build's version for local builds (``random-...`` for
    random weights). ``origin``: "hub", "folder", "debug" or "random".
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
    local_builds: "Mapping[str, LocalBuild] | None" = None,
    revision: str | None = None,
    patterns: Sequence[str] = HUB_PATTERNS,
    gated: frozenset = frozenset(),
) -> ModelSource:
    """Turn a model name into a :class:`ModelSource`, before any weights are read.

    ``name``: a local build's name (``local_builds``: name -> :class:`~icl_audio.families.LocalBuild`,
    built or found in the cache; ``debug_build``/``debug_revision`` are the short form for "debug"),
    an alias (``aliases``, matched case-insensitively), a local folder (must hold ``config.json``),
    or a hub id "org/name" (read from the Hugging Face cache when its weights are all there, else
    downloaded when the hub is reachable; ``revision`` is a branch, tag or commit, ignored
    otherwise; ``gated`` lists ids whose terms must be accepted, for the offline hint).
    ``kind`` ("LLM", "codec") and ``flag`` ("--model", "--codec") word the messages.
    Raises ModelError (one line): a missing folder, a file, a folder without config.json, a hub id
    that is not cached (or cached without its weights) and cannot be downloaded, a gated or unknown
    repository, a local build that cannot be written.
    """
    name = str(name)
    builds = dict(local_builds or {})
    if debug_build is not None:
        from icl_audio.families import LocalBuild

        builds[DEBUG_NAME] = LocalBuild(debug_build, debug_revision, "debug")
    if name in builds:
        build = builds[name]
        try:
            folder = Path(build.build())
        except OSError as exc:
            what = f"the debug {kind}" if build.origin == "debug" else f"{kind} {name}"
            raise ModelError(f"could not build {what} in {paths.models_dir()}: {exc}") from None
        _require_config(folder, f"the {build.origin} {kind} folder {folder}")
        return ModelSource(folder, name, build.revision or folder_revision(folder), build.origin)
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
    folder = _hub_snapshot(name, revision=revision, kind=kind, flag=flag, patterns=patterns, gated=name in gated)
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


def download_command(repo_id: str) -> str:
    """The shell command that fetches ``repo_id`` into the Hugging Face cache (huggingface_hub >= 1.0)."""
    return f"hf download {repo_id}"


def model_page(repo_id: str) -> str:
    """The repository's page on the hub (``HF_ENDPOINT``'s, https://huggingface.co by default)."""
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{repo_id}"


def missing_weights(folder: Path) -> list[str]:
    """The weight files a model folder lacks: the shards its ``model.safetensors.index.json`` names
    that are not there (a dangling cache link counts as absent), or ``model.safetensors`` when it has
    neither an index nor any ``.safetensors`` file. Empty when the weights are all there."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        except (OSError, ValueError, AttributeError):
            return [index.name]
        return [s for s in shards if not (folder / s).is_file()]
    if any(p.is_file() for p in folder.glob("*.safetensors")):
        return []
    return ["model.safetensors"]


def _hub_snapshot(repo_id: str, *, revision: str | None, kind: str, flag: str, patterns: Sequence[str],
                  gated: bool = False) -> Path:
    """The snapshot folder of ``repo_id`` in the HF cache (its name is the commit), with every weight
    file in it: a cached snapshot without its weights is completed by a download when the hub is
    reachable, and named in the error when it is not."""
    from huggingface_hub import get_token, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    cache = hub_cache_dir()
    kwargs = dict(revision=revision, cache_dir=cache, allow_patterns=list(patterns))
    cached, missing = None, []
    try:
        cached = Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
    except Exception as exc:  # not cached, or known incomplete (huggingface_hub's own tree listing)
        partial = getattr(exc, "snapshot_path", None)
        cached = Path(partial) if partial else None
    if cached is not None:
        missing = missing_weights(cached)
        if not missing:
            return cached
    rev = f" (revision {revision})" if revision else ""
    get = f"run `{download_command(repo_id)}` on a connected machine and copy its cache"
    if gated:
        get = f"accept its terms at {model_page(repo_id)} and log in (`hf auth login` or HF_TOKEN), then {get}"
    hint = f"{get}, or pass {flag} /path/to/folder holding a local copy"
    if cached is not None:
        where = f"{kind} {repo_id}{rev} is in the Hugging Face cache ({cached}) without its weights ({_names(missing)})"
    else:
        where = f"{kind} {repo_id}{rev} is not in the Hugging Face cache ({cache})"
    if hub_offline():
        raise ModelError(f"{where} and the hub is offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): {hint}")
    try:
        # The token is passed explicitly: HF_HUB_DISABLE_IMPLICIT_TOKEN (set by the CLI to keep
        # huggingface_hub quiet) would otherwise keep a logged-in user out of a gated repository.
        folder = Path(snapshot_download(repo_id, token=get_token(), **kwargs))
    except GatedRepoError:
        raise ModelError(f"{kind} {repo_id} is gated: accept its terms at {model_page(repo_id)} and log in "
                         f"(`hf auth login`, or set HF_TOKEN), then retry or run `{download_command(repo_id)}`") from None
    except RevisionNotFoundError:
        raise ModelError(f"{kind} {repo_id} has no revision {revision!r} on the hub") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{kind} {repo_id} was not found on the hub ({model_page(repo_id)}): check the id; "
                         f"for a private repository log in (`hf auth login`, or set HF_TOKEN); or pass {flag} "
                         "/path/to/folder") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"{where} and could not be downloaded ({type(exc).__name__}: {first}): {hint}") from None
    still = missing_weights(folder)
    if still:
        raise ModelError(f"{kind} {repo_id}{rev} on the hub has no weights matching {', '.join(patterns)} "
                         f"({_names(still)} not found): not a model icl-audio can load")
    return folder


def _names(files: Sequence[str]) -> str:
    return ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")


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
