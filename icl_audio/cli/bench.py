"""`icl-audio bench ...`: speed benchmarks of the scorer and the codec, and the ARCH benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from icl_audio.cli import bench_app
from icl_audio.recipes import RECIPES, get_recipe  # stdlib only: `icl-audio --help` stays fast


def _progress_to_stderr() -> None:
    """Show the bench modules' progress (INFO lines of the ``icl_audio.bench`` logger) on stderr."""
    import logging
    import sys

    logger = logging.getLogger("icl_audio.bench")
    if not any(getattr(h, "_icl_audio_progress", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._icl_audio_progress = True
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@bench_app.command("speed")
def speed(
    labels: int = typer.Option(50, "--labels", help="Number of candidate labels (ESC-50 has 50)."),
    k: int = typer.Option(4, "--k", help="Demonstrations in the prompt (250 audio tokens each)."),
    mode: str = typer.Option("direct", "--mode", metavar="direct|channel", help="Scoring direction to time."),
    reps: int = typer.Option(7, "--reps", metavar="N", help="Timed rounds (each a b b a, then one naive label)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Scorer speed at the real Llasa-1B shape (random weights): the engine against the arithmetic floor and naive."""
    from icl_audio.bench.speed import run_speed_bench
    from icl_audio.errors import ICLAudioError

    if mode not in ("direct", "channel"):
        raise ICLAudioError(f"unknown mode {mode!r}: use direct or channel")
    if labels < 1 or k < 0 or reps < 1:
        raise ICLAudioError("--labels and --reps must be >= 1 and --k >= 0")
    _progress_to_stderr()
    result = run_speed_bench(labels=labels, k=k, reps=reps, mode=mode)
    if as_json:
        print(json.dumps(result))
    else:
        from icl_audio.cli.render import print_mapping

        print_mapping("scorer speed", result)


@bench_app.command("codec")
def codec(
    clips: int = typer.Option(8, "--clips", help="Number of synthetic clips."),
    seconds: float = typer.Option(5.0, "--seconds", help="Length of each clip."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Codec speed at the real XCodec2 shape (random weights): plain transformers path vs ours."""
    from icl_audio.bench.codec import run_codec_bench

    _progress_to_stderr()
    result = run_codec_bench(clips=clips, seconds=seconds)
    if as_json:
        print(json.dumps(result))
    else:
        from icl_audio.cli.render import print_mapping

        print_mapping("codec speed", result)


@bench_app.command("memory")
def memory(
    clips: str = typer.Option("10", "--clips", metavar="N[,N...]", help="Support-set sizes to compare, each in its own process."),
    seconds: float = typer.Option(5.0, "--seconds", help="Length of each synthetic clip."),
    labels: int = typer.Option(10, "--labels", help="Candidate labels scored per query."),
    k: int = typer.Option(4, "--k", help="Demonstrations per prompt."),
    model: str = typer.Option("random-llasa-1b", "--model", "-m", help="LLM: random-llasa-1b (random weights, real shape) or what --model takes elsewhere."),
    codec: str = typer.Option("random-xcodec2", "--codec", "-c", help="Codec: random-xcodec2 (random weights, real shape) or what --codec takes elsewhere."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Peak memory of each stage (load, encode, embed, index, score) at the real shapes, per support-set size."""
    from icl_audio.bench.memory import MemoryBenchConfig, format_table, run_memory_bench
    from icl_audio.errors import ICLAudioError

    try:
        config = MemoryBenchConfig(clips=tuple(int(n) for n in clips.split(",")), seconds=seconds, labels=labels, k=k,
                                   model=model, codec=codec)
    except ValueError as exc:
        raise ICLAudioError(f"bench memory: {exc}") from None
    _progress_to_stderr()
    result = run_memory_bench(config)
    print(json.dumps(result) if as_json else format_table(result))


# ---------------------------------------------------------------------------------------------
# The ARCH benchmark: one command per dataset recipe, and `suite` for several at once.

# Kept in step with icl_audio.bench.config (DEFAULT_METHODS, METHODS), which imports numpy (through bench.clap) and so is not imported here.
ALL_METHODS = "icl,knn,linear-probe,majority,random-label,icl-random-demos"
OPTIONAL_METHODS = "clap-zero-shot"


class _BenchGroup(TyperGroup):
    """`icl-audio bench NAME`: dataset aliases ("ESC-50") find their command; an unknown name is one line."""

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not name.startswith("-") and name not in self.commands:
            from icl_audio.errors import SupportSetError

            try:
                args = [get_recipe(name).name, *args[1:]]
            except SupportSetError:
                others = ", ".join(c for c in self.commands if c not in RECIPES)
                raise SupportSetError(
                    f"unknown dataset or bench command {name!r} (datasets: {', '.join(RECIPES)}; commands: {others})"
                ) from None
        return super().resolve_command(ctx, args)


bench_app.info.cls = _BenchGroup


def run_dataset_bench(dataset: str, *, root: Path, k: str, mode: str, folds: Optional[str], limit: Optional[int],
                      methods: str, model: str, codec: str, out: Optional[Path], device: str, seed: int,
                      protocol: Optional[str], as_json: bool, quiet: bool, clip_seconds: Optional[float] = None,
                      clap_model: Optional[str] = None, probe_epochs: int = 200) -> None:
    """Run one dataset's bench (torchrun-aware) and print its summary (rank 0 only)."""
    from icl_audio.bench.arch import run_bench
    from icl_audio.bench.config import BenchConfig
    from icl_audio.bench.distributed import from_env
    from icl_audio.bench.report import jsonable, print_summary
    from icl_audio.cli.render import ProgressBars, stderr_console

    dist = from_env()
    cfg = BenchConfig(dataset=dataset, root=root, ks=k, modes=mode, folds=folds, limit=limit, methods=methods,
                      model=model, codec=codec, out=out, device=device, seed=seed, protocol=protocol,
                      clip_seconds=clip_seconds, probe_epochs=probe_epochs, **({"clap_model": clap_model} if clap_model else {}))
    try:
        with ProgressBars(enabled=not quiet and dist.is_main) as bars:
            outcome = run_bench(cfg, dist=dist, progress_factory=bars.bar)
    finally:
        dist.stop()
    if outcome.results is None:
        return
    stderr_console().print(
        f"{outcome.computed} predictions computed, {outcome.reused} reused from earlier runs; results in {outcome.out}",
        markup=False, highlight=False,
    )
    if as_json:
        print(json.dumps(jsonable(outcome.results), ensure_ascii=False))
    else:
        print_summary(outcome.results)


def _dataset_command(dataset: str):
    recipe = RECIPES[dataset]

    def command(
        root: Path = typer.Option(..., "--root", help=f"The {recipe.title or dataset} folder, in its official layout ({recipe.layout})."),
        k: str = typer.Option("0,1,4,8", "--k", help="Demonstration counts, comma-separated (0 = zero-shot)."),
        mode: str = typer.Option("direct,channel", "--mode", help="Scoring modes of the icl methods: direct, channel."),
        folds: Optional[str] = typer.Option(None, "--folds", help="Evaluate only these folds (e.g. 1,2); split datasets have 'test'."),
        limit: Optional[int] = typer.Option(None, "--limit", help="At most N queries per fold: a seeded subsample, dataset order kept."),
        methods: str = typer.Option(ALL_METHODS, "--methods", help="Methods, comma-separated: " + ALL_METHODS.replace(",", ", ")
                                    + f"; also {OPTIONAL_METHODS}. linear-probe always runs."),
        model: str = typer.Option("HKUSTAudio/Llasa-1B-Multilingual", "--model", "-m", help="LLM: hub id, llasa-1b, local folder or debug."),
        codec: str = typer.Option("HKUSTAudio/xcodec2-hf", "--codec", "-c", help="Codec: hub id, local folder or debug."),
        out: Optional[Path] = typer.Option(None, "--out", help=f"Output folder (default bench-results/{dataset})."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)."),
        seed: int = typer.Option(0, "--seed", help="Seeds the --limit subsample and the random baselines."),
        protocol: Optional[str] = typer.Option(None, "--protocol", help="folds or splits, where a dataset has both (RAVDESS)."),
        clip_seconds: Optional[float] = typer.Option(None, "--clip-seconds", help=f"Read each clip up to this long, head kept (default: ARCH's {recipe.clip_seconds:g} s)."),
        clap_model: Optional[str] = typer.Option(None, "--clap-model", help="CLAP model of clap-zero-shot: hub id or folder (default laion/clap-htsat-unfused)."),
        probe_epochs: int = typer.Option(200, "--probe-epochs", help="Epochs of the linear-probe baseline (ARCH's default 200)."),
        as_json: bool = typer.Option(False, "--json", help="Print results.json instead of the table."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ) -> None:
        run_dataset_bench(dataset, root=root, k=k, mode=mode, folds=folds, limit=limit, methods=methods, model=model,
                          codec=codec, out=out, device=device, seed=seed, protocol=protocol, as_json=as_json, quiet=quiet,
                          clip_seconds=clip_seconds, clap_model=clap_model, probe_epochs=probe_epochs)

    command.__doc__ = (
        f"ARCH benchmark on {recipe.title or dataset}: in-context learning beside k-NN, a linear probe, majority and random baselines "
        f"(resumable; scales out under torchrun)."
    )
    command.__name__ = f"bench_{dataset.replace('-', '_')}"
    return command


for _name in RECIPES:
    bench_app.command(_name)(_dataset_command(_name))


@bench_app.command("suite")
def suite(
    config: Path = typer.Argument(..., help="A TOML file: [datasets] name = \"/path\", plus shared settings."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (overrides the file's `out`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the suite results as JSON instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the bench on every dataset of CONFIG and print one table beside the X-Codec paper's linear probes."""
    from icl_audio.bench.distributed import from_env
    from icl_audio.bench.report import jsonable
    from icl_audio.bench.suite import load_suite, print_suite, run_suite
    from icl_audio.cli.render import ProgressBars

    dist = from_env()
    spec = load_suite(config, out=out)
    try:
        with ProgressBars(enabled=not quiet and dist.is_main) as bars:
            result = run_suite(spec, dist=dist, progress_factory=bars.bar)
    finally:
        dist.stop()
    if result is None:
        return
    if as_json:
        print(json.dumps(jsonable(result), ensure_ascii=False))
    else:
        print_suite(result)
