"""Benchmark configuration: the methods, modes and defaults, BenchConfig, option parsing and validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from icl_audio.bench.clap import DEFAULT_CLAP
from icl_audio.constants import (
    BENCH_METHODS as METHODS,
    DEFAULT_BENCH_METHODS as DEFAULT_METHODS,  # every method but CLAP (another model, another download)
    DEFAULT_CODEC,
    DEFAULT_EPISODE_METHODS,  # the episode protocol's (N-way K-shot); clap-zero-shot only when asked
    DEFAULT_LLM,
    EPISODE_METHODS,
    SCORING_MODES as MODES,
)
from icl_audio.errors import ICLAudioError

#: Always run: the trained-probe reference on the same representation belongs in every report.
ALWAYS_METHODS = ("linear-probe",)
UNIT_METHODS = ("linear-probe", "clap-zero-shot", "majority", "random-label")  # one run per unit, no k, no mode
ICL_METHODS = ("icl", "icl-random-demos")
RETRIEVAL_METHODS = ("icl", "knn")  # the methods that read the retrieved neighbours
RANDOM_METHODS = ("random-label", "icl-random-demos")
DEFAULT_KS = (0, 1, 4, 8)

#: Protocols: the fold protocol's units (folds, splits), or MetaAudio's ESC-50 episodes.
PROTOCOLS = ("folds", "splits", "metaaudio")
#: Generic sources (the user's own labelled data), read as `support build --folder/--csv` reads them.
SOURCES = ("folder", "csv")
DEFAULT_WAY, DEFAULT_SHOTS, DEFAULT_QUERIES = 5, (1,), 1
DEFAULT_KFOLD = 5


class BenchError(ICLAudioError):
    """A benchmark request that cannot run (bad option, fold not in the dataset, damaged outputs)."""


@dataclass(frozen=True)
class BenchConfig:
    """One `icl-audio bench DATASET` invocation.

    dataset: recipe name (``icl_audio.recipes.RECIPES``); root: its folder in the official layout, or
    hf: its Hugging Face hub copy in place of ``root`` (a hub id or a local save_to_disk / parquet
    folder with the copy's columns; hf_config: its config); audio_root: a second folder a recipe reads
    its audio from (ARCA23K-FSD: FSD50K's).
    ks: demonstration counts (k=0 is zero-shot icl); modes: scoring modes of the icl methods.
    folds: evaluation units to run (fold numbers or split names), None for all the dataset has.
    limit: queries per unit (a seeded subsample in dataset order), None for all.
    methods: any of :data:`METHODS`. model / codec: as ``load_lm`` / ``load_codec`` accept them.
    out: output folder (default ``bench-results/<dataset>``). seed: seeds the subsample and the
    random baselines. protocol: None for ARCH's, or "folds"/"splits" where a recipe has both.
    clip_seconds: how much of each clip is read (head kept); None for the dataset's ARCH length.
    clap_model: the CLAP checkpoint of the ``clap-zero-shot`` method (hub id or local folder).
    probe_epochs: epochs of the ``linear-probe`` baseline (ARCH's default 200).

    Episodes (any of ``episodes``, ``episodes_file`` or ``protocol="metaaudio"`` selects them; see
    :mod:`icl_audio.bench.episode_run`): episodes: how many per K; way: N; shots: K values; queries:
    queries per class; episodes_file: an ``episodes.jsonl`` or ``.scp`` list to run instead of drawing.
    source: None for a dataset recipe, or "folder" / "csv" for the user's own data at ``root``;
    kfold: stratified k-fold cross-validation of such data (default 5 when it defines no folds).
    ``ks`` and ``methods`` left None take the protocol's defaults.
    """

    dataset: str
    root: Path | None = None
    ks: tuple[int, ...] | None = None
    modes: tuple[str, ...] = MODES
    folds: tuple[int | str, ...] | None = None
    limit: int | None = None
    methods: tuple[str, ...] | None = None
    model: str = DEFAULT_LLM
    codec: str = DEFAULT_CODEC
    out: Path | None = None
    device: str = "auto"
    seed: int = 0
    protocol: str | None = None
    clip_seconds: float | None = None
    clap_model: str = DEFAULT_CLAP
    probe_epochs: int = 200
    hf: str | None = None
    hf_config: str | None = None
    audio_root: Path | None = None
    episodes: int | None = None
    way: int | None = None
    shots: tuple[int, ...] | None = None
    queries: int | None = None
    episodes_file: Path | None = None
    source: str | None = None
    kfold: int | None = None

    @property
    def is_episodes(self) -> bool:
        """Whether this bench runs N-way K-shot episodes (not the fold protocol)."""
        return self.episodes is not None or self.episodes_file is not None or self.protocol == "metaaudio"

    @property
    def out_dir(self) -> Path:
        """Where results go (default ``bench-results/<dataset>``; own data: ``bench-results/<source>-<folder name>``)."""
        if self.out is not None:
            return Path(self.out)
        if self.source is not None:
            return Path("bench-results") / f"{self.source}-{source_slug(self.root)}"
        return Path("bench-results") / self.dataset


def source_slug(path: Path | str) -> str:
    """A file-name-safe short name of a source folder or file (``My Sounds/`` -> ``My-Sounds``)."""
    import re

    path = Path(str(path)).expanduser()
    stem = path.stem if path.suffix.lower() == ".csv" else (path.name or path.resolve().name)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:40] or "data"


def parse_ks(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"0,1,4,8"`` (or a list of ints) -> sorted distinct non-negative ints; one-line error otherwise."""
    values = text.split(",") if isinstance(text, str) else list(text)
    out = set()
    for value in values:
        if isinstance(value, str) and not value.strip():
            continue
        try:
            if isinstance(value, bool) or (not isinstance(value, int) and not str(value).strip().lstrip("+").isdigit()):
                raise ValueError
            k = int(value)
        except ValueError:
            raise BenchError(f"--k must be comma-separated integers >= 0 (e.g. 0,1,4,8), got {text!r}") from None
        out.add(k)
    if not out:
        raise BenchError("--k is empty (e.g. --k 0,1,4,8)")
    return tuple(sorted(out))


def parse_choices(text: str | Sequence[str], allowed: Sequence[str], option: str) -> tuple[str, ...]:
    """``"a,b"`` (or a list) -> the distinct values, each one of ``allowed``; one-line error otherwise."""
    values = text.split(",") if isinstance(text, str) else [str(v) for v in text]
    out: list[str] = []
    for value in (v.strip() for v in values):
        if not value:
            continue
        if value not in allowed:
            raise BenchError(f"unknown {option} value {value!r} (choose from: {', '.join(allowed)})")
        if value not in out:
            out.append(value)
    if not out:
        raise BenchError(f"{option} is empty (choose from: {', '.join(allowed)})")
    return tuple(out)


def parse_units(text: str | Sequence[int | str] | None) -> tuple[int | str, ...] | None:
    """``"1,2"`` -> (1, 2); split names ("test") stay strings; None -> None (every unit)."""
    if text is None:
        return None
    values = text.split(",") if isinstance(text, str) else list(text)
    out: list[int | str] = []
    for value in values:
        value = str(value).strip()
        if not value:
            continue
        unit: int | str = int(value) if value.lstrip("+-").isdigit() else value
        if unit not in out:
            out.append(unit)
    if not out:
        raise BenchError("--folds is empty (e.g. --folds 1,2)")
    return tuple(out)


def _positive(value, option: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BenchError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return value


def _validate_episodes(cfg: BenchConfig) -> dict:
    """The normalised episode fields of ``cfg`` (BenchError on anything that does not belong to episodes)."""
    if cfg.ks is not None:
        raise BenchError("--k is not used with episodes (every one of the N x K clips is shown): give --shot K")
    if cfg.limit is not None:
        raise BenchError("--limit is not used with episodes: --episodes sets how many are run")
    if cfg.kfold is not None:
        raise BenchError("give --episodes or --kfold, not both")
    if cfg.protocol in ("folds", "splits"):
        raise BenchError(f"--protocol {cfg.protocol} chooses the fold protocol's units; episodes draw from every clip "
                         "(restrict them with --folds)")
    allowed = tuple(dict.fromkeys(METHODS + EPISODE_METHODS))
    methods = parse_choices(cfg.methods if cfg.methods is not None else DEFAULT_EPISODE_METHODS, allowed, "--methods")
    foreign = [m for m in methods if m not in EPISODE_METHODS]
    if foreign:
        raise BenchError(f"{', '.join(foreign)} belong to the fold protocol, not to episodes "
                         f"(with episodes choose from: {', '.join(EPISODE_METHODS)})")
    metaaudio = cfg.protocol == "metaaudio"
    if metaaudio and cfg.source is None and cfg.dataset != "esc50":
        raise BenchError(f"--protocol metaaudio is MetaAudio's ESC-50 protocol: run it with `bench esc50`, not {cfg.dataset}")
    if metaaudio and cfg.episodes_file is not None:
        raise BenchError("--protocol metaaudio draws its own episodes: give --episodes-file without it")
    way = _positive(cfg.way if cfg.way is not None else DEFAULT_WAY, "--way", 2)
    queries = _positive(cfg.queries if cfg.queries is not None else DEFAULT_QUERIES, "--queries")
    if metaaudio and (way != 5 or queries != 1):
        raise BenchError("--protocol metaaudio is 5-way with one query per class: leave --way and --queries out")
    from icl_audio.bench.metaaudio import METAAUDIO_EPISODES, METAAUDIO_SHOTS

    shots = parse_ks(cfg.shots if cfg.shots is not None else (METAAUDIO_SHOTS if metaaudio else DEFAULT_SHOTS))
    if 0 in shots:
        raise BenchError("--shot must be >= 1 (zero-shot is `--k 0` of the fold protocol)")
    episodes = cfg.episodes if cfg.episodes is not None or cfg.episodes_file is not None else (
        METAAUDIO_EPISODES if metaaudio else None)
    if episodes is not None:
        _positive(episodes, "--episodes")
    return {"methods": methods, "way": way, "queries": queries, "shots": shots, "episodes": episodes}


def validate(cfg: BenchConfig) -> BenchConfig:
    """Check and normalise a config's options (one-line BenchError on anything wrong)."""
    from dataclasses import replace

    if cfg.protocol is not None and cfg.protocol not in PROTOCOLS:
        raise BenchError(f"unknown --protocol {cfg.protocol!r} (choose from: {', '.join(PROTOCOLS)})")
    if cfg.source is not None and cfg.source not in SOURCES:
        raise BenchError(f"unknown source {cfg.source!r} (choose from: {', '.join(SOURCES)})")
    if cfg.kfold is not None:
        _positive(cfg.kfold, "--kfold", 2)
        if cfg.source is None:
            raise BenchError("--kfold is for your own data (bench folder / bench csv); ARCH datasets keep their folds")
    modes = parse_choices(cfg.modes, MODES, "--mode")
    common = {"modes": modes, "folds": parse_units(cfg.folds)}
    if cfg.is_episodes:
        return _validate_common(replace(cfg, **common, **_validate_episodes(cfg)))
    for name, value in (("--way", cfg.way), ("--shot", cfg.shots), ("--queries", cfg.queries)):
        if value is not None:
            raise BenchError(f"{name} belongs to episodes: give --episodes T too")
    ks = parse_ks(cfg.ks if cfg.ks is not None else DEFAULT_KS)
    methods = parse_choices(cfg.methods if cfg.methods is not None else DEFAULT_METHODS, METHODS, "--methods")
    methods += tuple(m for m in ALWAYS_METHODS if m not in methods)
    if cfg.limit is not None and (isinstance(cfg.limit, bool) or not isinstance(cfg.limit, int) or cfg.limit < 1):
        raise BenchError(f"--limit must be a positive integer, got {cfg.limit!r}")
    return _validate_common(replace(cfg, ks=ks, methods=methods, **common))


def _validate_common(cfg: BenchConfig) -> BenchConfig:
    if cfg.clip_seconds is not None and (isinstance(cfg.clip_seconds, bool) or not isinstance(cfg.clip_seconds, (int, float))
                                         or not 0 < cfg.clip_seconds <= 3600):
        raise BenchError(f"--clip-seconds must be a number of seconds in (0, 3600], got {cfg.clip_seconds!r}")
    if isinstance(cfg.probe_epochs, bool) or not isinstance(cfg.probe_epochs, int) or cfg.probe_epochs < 1:
        raise BenchError(f"--probe-epochs must be a positive integer, got {cfg.probe_epochs!r}")
    if not isinstance(cfg.clap_model, str) or not cfg.clap_model.strip():
        raise BenchError(f"--clap-model must be a hub id or a folder, got {cfg.clap_model!r}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise BenchError(f"--seed must be an integer, got {cfg.seed!r}")
    return cfg
