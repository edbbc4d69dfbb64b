"""Benchmark configuration: the methods, modes and defaults, BenchConfig, option parsing and validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from icl_audio.bench.clap import DEFAULT_CLAP
from icl_audio.constants import DEFAULT_CODEC, DEFAULT_LLM
from icl_audio.errors import ICLAudioError

METHODS = ("icl", "knn", "linear-probe", "clap-zero-shot", "majority", "random-label", "icl-random-demos")
#: What runs without --methods: every method but CLAP (another model, another download).
DEFAULT_METHODS = ("icl", "knn", "linear-probe", "majority", "random-label", "icl-random-demos")
#: Always run: the trained-probe reference on the same representation belongs in every report.
ALWAYS_METHODS = ("linear-probe",)
UNIT_METHODS = ("linear-probe", "clap-zero-shot", "majority", "random-label")  # one run per unit, no k, no mode
ICL_METHODS = ("icl", "icl-random-demos")
RETRIEVAL_METHODS = ("icl", "knn")  # the methods that read the retrieved neighbours
RANDOM_METHODS = ("random-label", "icl-random-demos")
MODES = ("direct", "channel")
DEFAULT_KS = (0, 1, 4, 8)


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
    """

    dataset: str
    root: Path | None = None
    ks: tuple[int, ...] = DEFAULT_KS
    modes: tuple[str, ...] = MODES
    folds: tuple[int | str, ...] | None = None
    limit: int | None = None
    methods: tuple[str, ...] = DEFAULT_METHODS
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

    @property
    def out_dir(self) -> Path:
        """Where results go."""
        return Path(self.out) if self.out is not None else Path("bench-results") / self.dataset


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


def validate(cfg: BenchConfig) -> BenchConfig:
    """Check and normalise a config's options (one-line BenchError on anything wrong)."""
    from dataclasses import replace

    ks = parse_ks(cfg.ks)
    modes = parse_choices(cfg.modes, MODES, "--mode")
    methods = parse_choices(cfg.methods, METHODS, "--methods")
    methods += tuple(m for m in ALWAYS_METHODS if m not in methods)
    if cfg.clip_seconds is not None and (isinstance(cfg.clip_seconds, bool) or not isinstance(cfg.clip_seconds, (int, float))
                                         or not 0 < cfg.clip_seconds <= 3600):
        raise BenchError(f"--clip-seconds must be a number of seconds in (0, 3600], got {cfg.clip_seconds!r}")
    if isinstance(cfg.probe_epochs, bool) or not isinstance(cfg.probe_epochs, int) or cfg.probe_epochs < 1:
        raise BenchError(f"--probe-epochs must be a positive integer, got {cfg.probe_epochs!r}")
    if not isinstance(cfg.clap_model, str) or not cfg.clap_model.strip():
        raise BenchError(f"--clap-model must be a hub id or a folder, got {cfg.clap_model!r}")
    if cfg.limit is not None and (isinstance(cfg.limit, bool) or not isinstance(cfg.limit, int) or cfg.limit < 1):
        raise BenchError(f"--limit must be a positive integer, got {cfg.limit!r}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise BenchError(f"--seed must be an integer, got {cfg.seed!r}")
    return replace(cfg, ks=ks, modes=modes, methods=methods, folds=parse_units(cfg.folds))
