"""N-way K-shot episodes as data: seeded draws, the ``episodes.jsonl`` file, UniAudio 1.5's ``.scp`` lists.

An episode is N classes, K labelled support clips of each (the demonstrations, in the order the
prompt shows them) and Q query clips of each, disjoint from the supports. Everything here is pure
(no model, no audio): an episode names its clips by :attr:`Item.key <icl_audio.recipes.Item.key>`.

Drawing (:func:`draw_episodes`) is a function of the class pool, the run's seed and the episode's
index only, through hash orders (:func:`icl_audio.recipes.seeded_order`), so it is the same on every
platform and numpy version. Episode ``i`` gets its own seed ``s`` (recorded in the file, and the one
its random baselines use); from ``s``:

    classes   the first N of the pool's classes in hash order (uniform, without replacement)
    per class its clips in hash order: the first Q are queries, the next K supports
    prompt    the N x K supports in hash order

so the K = 1 and K = 5 episodes of index ``i`` share classes and queries, and the 1-shot supports
are among the 5-shot ones (a paired comparison of K), and ``--episodes 100`` runs the first 100 of
``--episodes 1000``.

File format (``episodes.jsonl``, one episode per line)::

    {"episode": 0, "seed": 8127..., "way": 5, "shot": 1,
     "support": [{"path": "...", "label": "dog"}, ...],      # prompt order
     "queries": [{"path": "...", "label": "cow"}, ...]}

``.scp`` (UniAudio 1.5 / LLM-Codec): one episode per line, comma-separated ``class/file.wav``
entries (a trailing comma), relative to a root folder; every entry but the last is a
demonstration, the last the query; the class is the file's folder name.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from icl_audio.bench.config import BenchError
from icl_audio.fsutil import atomic_write
from icl_audio.recipes import seeded_order


@dataclass(frozen=True)
class EpisodeClip:
    """One clip of an episode: its key (:attr:`Item.key`) and its label."""

    key: str
    label: str


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot episode: ``support`` in prompt order, ``queries``, and its ``seed``."""

    index: int
    seed: int
    support: tuple[EpisodeClip, ...]
    queries: tuple[EpisodeClip, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """The candidates: the support's distinct labels, sorted."""
        return tuple(sorted({c.label for c in self.support}))

    @property
    def way(self) -> int:
        return len(self.labels)

    @property
    def shot(self) -> int | None:
        """Supports per class, or None when the classes have different counts (a hand-made episode)."""
        counts = set(Counter(c.label for c in self.support).values())
        return counts.pop() if len(counts) == 1 else None

    @property
    def leaked(self) -> tuple[int, ...]:
        """Positions of the queries that are also demonstrations (only ever in imported lists)."""
        keys = {c.key for c in self.support}
        return tuple(i for i, q in enumerate(self.queries) if q.key in keys)

    def to_json(self) -> dict[str, Any]:
        return {
            "episode": self.index, "seed": self.seed, "way": self.way, "shot": self.shot,
            "support": [{"path": c.key, "label": c.label} for c in self.support],
            "queries": [{"path": c.key, "label": c.label} for c in self.queries],
        }

    @property
    def fingerprint(self) -> str:
        """A short hash of the episode's content (seed, clips, order): prediction lines name it."""
        body = {k: v for k, v in self.to_json().items() if k != "episode"}
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def episode_seed(seed: int, index: int) -> int:
    """The seed of episode ``index`` of a run seeded ``seed`` (63 bits, stable everywhere)."""
    digest = hashlib.sha256(f"{seed}:episode:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def draw_episodes(pool: Mapping[str, Sequence[str]], *, episodes: int, way: int, shots: Sequence[int], queries: int,
                  seed: int) -> list[Episode]:
    """``episodes`` episodes per K of ``shots``, drawn from ``pool`` (label -> clip keys); pure.

    Episode indices run over the shots in order (K = shots[0] first: 0..T-1, then T..2T-1, ...);
    episode ``i`` of every K has the same seed (see the module docstring). Every class of the pool
    must hold at least ``max(shots) + queries`` clips (:func:`class_pool` keeps only those).
    """
    labels = sorted(pool)
    if way > len(labels):
        raise BenchError(f"{way}-way episodes need {way} classes with enough clips; the pool has {len(labels)}")
    need = max(shots) + queries
    short = [label for label in labels if len(set(pool[label])) < need]
    if short:
        raise BenchError(f"classes {', '.join(short[:5])} have fewer than {need} clips")
    out: list[Episode] = []
    for group, shot in enumerate(shots):
        for i in range(episodes):
            s = episode_seed(seed, i)
            support: list[EpisodeClip] = []
            query: list[EpisodeClip] = []
            for label in seeded_order(labels, s)[:way]:
                order = seeded_order(sorted(set(pool[label])), f"{s}:{label}")
                query += [EpisodeClip(k, label) for k in order[:queries]]
                support += [EpisodeClip(k, label) for k in order[queries:queries + shot]]
            by_key = {c.key: c for c in support}
            support = [by_key[k] for k in seeded_order(list(by_key), f"{s}:order")]
            out.append(Episode(group * episodes + i, s, tuple(support), tuple(query)))
    return out


def class_pool(items: Iterable[Any], *, min_clips: int, classes: Sequence[str] | None = None
               ) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The episode pool of single-label ``items`` (:class:`~icl_audio.recipes.Item`): label -> clip keys.

    ``classes``: keep only these labels (None: every label). Classes with fewer than ``min_clips``
    distinct clips cannot fill an episode and are left out: returned as ``{label: clips}``.
    """
    pool: dict[str, list[str]] = {}
    for item in items:
        if classes is None or item.label in classes:
            pool.setdefault(item.label, []).append(item.key)
    small = {label: len(set(keys)) for label, keys in pool.items() if len(set(keys)) < min_clips}
    return {label: keys for label, keys in pool.items() if label not in small}, small


# --------------------------------------------------------------------------------------------
# files


def write_episodes(path: Path, episodes: Sequence[Episode]) -> None:
    """Write ``episodes`` as JSONL, atomically."""
    atomic_write(Path(path), "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in episodes))


def _clip(entry: Any, where: str) -> EpisodeClip:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("label"), str) \
            or not entry["path"].strip() or not entry["label"].strip():
        raise BenchError(f"{where}: each clip must be {{\"path\": ..., \"label\": ...}} with non-empty strings")
    return EpisodeClip(entry["path"], entry["label"].strip())


def _checked(episode: Episode, where: str) -> Episode:
    if not episode.support or not episode.queries:
        raise BenchError(f"{where}: an episode needs at least one support clip and one query")
    missing = sorted({q.label for q in episode.queries} - set(episode.labels))
    if missing:
        raise BenchError(f"{where}: query class {missing[0]!r} has no demonstration in the episode")
    return episode


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"{what} {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{what} {path}: cannot read ({exc})") from None


def read_episodes(path: Path) -> list[Episode]:
    """Episodes from an ``episodes.jsonl`` file (the format in the module docstring).

    Raises BenchError (one line, naming the line) for anything malformed, a repeated episode index,
    or a query whose class has no demonstration.
    """
    path = Path(path).expanduser()
    text = _read_text(path, "episodes file")
    out: list[Episode] = []
    seen: set[int] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"episodes file {path}, line {number}"
        try:
            obj = json.loads(line)
        except ValueError:
            raise BenchError(f"{where}: not JSON") from None
        if not isinstance(obj, dict):
            raise BenchError(f"{where}: not a JSON object")
        index, seed = obj.get("episode"), obj.get("seed")
        if isinstance(index, bool) or not isinstance(index, int) or isinstance(seed, bool) or not isinstance(seed, int):
            raise BenchError(f"{where}: \"episode\" and \"seed\" must be integers")
        if index in seen:
            raise BenchError(f"{where}: episode {index} appears twice")
        seen.add(index)
        support, queries = obj.get("support"), obj.get("queries")
        if not isinstance(support, list) or not isinstance(queries, list):
            raise BenchError(f"{where}: \"support\" and \"queries\" must be lists")
        out.append(_checked(Episode(index, seed, tuple(_clip(c, where) for c in support),
                                    tuple(_clip(c, where) for c in queries)), where))
    if not out:
        raise BenchError(f"episodes file {path}: no episodes")
    return out


def read_scp(path: Path, root: Path, seed: int = 0) -> list[Episode]:
    """Episodes from a UniAudio 1.5 ``.scp`` list (module docstring), clips resolved under ``root``.

    Keys are the absolute paths under ``root`` (the files need not exist yet: they are read later).
    Episode ``i`` gets :func:`episode_seed` ``(seed, i)`` for its random baselines. A query that is
    also one of its episode's demonstrations is kept (UniAudio's shipped list has such episodes) and
    reported by :attr:`Episode.leaked`.
    """
    path = Path(path).expanduser()
    root = Path(root).expanduser().resolve()
    text = _read_text(path, "episode list")
    out: list[Episode] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entries = [e.strip() for e in line.split(",") if e.strip()]
        if not entries:
            continue
        where = f"episode list {path}, line {number}"
        if len(entries) < 2:
            raise BenchError(f"{where}: needs demonstrations and a query (class/file.wav entries, the query last)")
        clips = []
        for entry in entries:
            rel = Path(entry)
            if rel.is_absolute() or len(rel.parts) < 2:
                raise BenchError(f"{where}: {entry!r} is not class/file relative to --root")
            clips.append(EpisodeClip(str(root / rel), rel.parent.name))
        index = len(out)
        out.append(_checked(Episode(index, episode_seed(seed, index), tuple(clips[:-1]), (clips[-1],)), where))
    if not out:
        raise BenchError(f"episode list {path}: no episodes")
    return out


def load_episode_file(path: Path, root: Path | None, seed: int = 0) -> list[Episode]:
    """An ``.scp`` list (needs ``root``) or an ``episodes.jsonl`` file, by its suffix."""
    path = Path(path)
    if path.suffix.lower() == ".scp":
        if root is None:
            raise BenchError(f"episode list {path}: a .scp list needs --root (its entries are relative to it)")
        return read_scp(path, root, seed)
    return read_episodes(path)
