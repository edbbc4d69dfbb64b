"""`icl-audio bench ...`: speed benchmarks of the scorer and the codec, and the ARCH benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from icl_audio.cli import bench_app
from icl_audio.recipes import ARCH_DATASETS, RECIPES, get_recipe  # stdlib only: `icl-audio --help` stays fast


@bench_app.command("speed")
def speed(
    labels: int = typer.Option(50, "--labels", help="Number of candidate labels (ESC-50 has 50)."),
    k: int = typer.Option(4, "--k", help="Demonstrations in the prompt (250 audio tokens each)."),
    mode: str = typer.Option("direct", "--mode", metavar="direct|channel", help="Scoring direction to time."),
    reps: int = typer.Option(7, "--reps", metavar="N", help="Timed rounds (each a b b a, then one naive label)."),
    quant: Optional[str] = typer.Option(None, "--quant", metavar="int8|nf4", help="Time the model loaded quantised (random-llasa-1b, saved once)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Scorer speed at the real Llasa-1B shape (random weights): the engine against the arithmetic floor and naive."""
    from icl_audio.bench.speed import run_speed_bench
    from icl_audio.errors import ICLAudioError

    if mode not in ("direct", "channel"):
        raise ICLAudioError(f"unknown mode {mode!r}: use direct or channel")
    if labels < 1 or k < 0 or reps < 1:
        raise ICLAudioError("--labels and --reps must be >= 1 and --k >= 0")
    result = run_speed_bench(labels=labels, k=k, reps=reps, mode=mode, quant=quant)
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

    result = run_codec_bench(clips=clips, seconds=seconds)
    if as_json:
        print(json.dumps(result))
    else:
        from icl_audio.cli.render import print_mapping

        print_mapping("codec speed", result)


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


def run_dataset_bench(dataset: str, *, root: Optional[Path], k: str, mode: str, folds: Optional[str], limit: Optional[int],
                      methods: str, model: str, codec: str, out: Optional[Path], device: str, seed: int,
                      protocol: Optional[str], as_json: bool, quiet: bool, clip_seconds: Optional[float] = None,
                      clap_model: Optional[str] = None, probe_epochs: int = 200, hf: Optional[str] = None,
                      hf_config: Optional[str] = None, audio_root: Optional[Path] = None, recipe=None, items=None,
                      source: Optional[str] = None) -> None:
    """Run one dataset's bench (torchrun-aware) and print its summary (rank 0 only).

    ``recipe``/``items``/``source``: a recipe made at run time and its items (``bench hf``)."""
    from icl_audio.bench.arch import run_bench
    from icl_audio.bench.config import BenchConfig
    from icl_audio.bench.distributed import from_env
    from icl_audio.bench.report import jsonable, print_summary
    from icl_audio.cli.render import ProgressBars, stderr_console

    dist = from_env()
    cfg = BenchConfig(dataset=dataset, root=root, ks=k, modes=mode, folds=folds, limit=limit, methods=methods,
                      model=model, codec=codec, out=out, device=device, seed=seed, protocol=protocol,
                      clip_seconds=clip_seconds, probe_epochs=probe_epochs, hf=hf, hf_config=hf_config, audio_root=audio_root,
                      **({"clap_model": clap_model} if clap_model else {}))
    try:
        with ProgressBars(enabled=not quiet and dist.is_main) as bars:
            outcome = run_bench(cfg, dist=dist, progress_factory=bars.bar, recipe=recipe, items=items, source=source)
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
    hub = f" (or --hf {recipe.hub.dataset})" if recipe.hub else ""

    def command(
        root: Optional[Path] = typer.Option(None, "--root", help=f"The {recipe.title or dataset} folder, in its official layout ({recipe.layout}){hub}."),
        hf: Optional[str] = typer.Option(None, "--hf", metavar="OWNER/NAME|FOLDER", help=(
            f"Its Hugging Face hub copy in place of --root ({recipe.hub.dataset}, or a local copy with its columns; "
            f"{recipe.hub.note}); pip install 'icl-audio[hf]'." if recipe.hub else "No hub copy is known for this dataset."),
            hidden=recipe.hub is None),
        hf_config: Optional[str] = typer.Option(None, "--config", help="--hf: the dataset's config.", hidden=recipe.hub is None),
        audio_root: Optional[Path] = typer.Option(None, "--audio-root", help=f"{recipe.audio_root} (default: beside --root).",
                                                  hidden=recipe.audio_root is None),
        k: str = typer.Option("0,1,4,8", "--k", help="Demonstration counts, comma-separated (0 = zero-shot)."),
        mode: str = typer.Option("direct,channel", "--mode", help="Scoring modes of the icl methods: direct, channel."),
        folds: Optional[str] = typer.Option(None, "--folds", help="Evaluate only these folds (e.g. 1,2); split datasets have 'test'."),
        limit: Optional[int] = typer.Option(None, "--limit", help="At most N queries per fold: a seeded subsample, dataset order kept."),
        methods: str = typer.Option(ALL_METHODS, "--methods", help="Methods, comma-separated: " + ALL_METHODS.replace(",", ", ")
                                    + f"; also {OPTIONAL_METHODS}. linear-probe always runs."),
        model: str = typer.Option("HKUSTAudio/Llasa-1B-Multilingual", "--model", "-m", help="LLM: hub id, llasa-1b, local folder, debug or random-llasa-1b (random weights, real size)."),
        codec: str = typer.Option("HKUSTAudio/xcodec2-hf", "--codec", "-c", help="Codec: hub id, local folder, debug or random-xcodec2 (random weights, real size)."),
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
                          clip_seconds=clip_seconds, clap_model=clap_model, probe_epochs=probe_epochs, hf=hf,
                          hf_config=hf_config, audio_root=audio_root)

    command.__doc__ = (
        f"{'ARCH benchmark' if dataset in ARCH_DATASETS else 'Benchmark'} on {recipe.title or dataset}: in-context learning beside k-NN, a linear probe, majority and random baselines "
        f"(resumable; scales out under torchrun)."
    )
    command.__name__ = f"bench_{dataset.replace('-', '_')}"
    return command


for _name in RECIPES:
    bench_app.command(_name)(_dataset_command(_name))


@bench_app.command("hf")
def bench_hf(
    hf: str = typer.Option(..., "--hf", metavar="OWNER/NAME|FOLDER", help="A Hugging Face dataset: hub id, save_to_disk folder or folder of parquet files (pip install 'icl-audio[hf]')."),
    hf_config: Optional[str] = typer.Option(None, "--config", help="The dataset's config."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="The label column [default: the only ClassLabel column, or 'label']."),
    audio_column: str = typer.Option("audio", "--audio-column", help="The audio column."),
    fold_column: Optional[str] = typer.Option(None, "--fold-column", help="Fold protocol: leave one fold of this column out. Without it: the split protocol over the dataset's train / test splits."),
    k: str = typer.Option("0,1,4,8", "--k", help="Demonstration counts, comma-separated (0 = zero-shot)."),
    mode: str = typer.Option("direct,channel", "--mode", help="Scoring modes of the icl methods: direct, channel."),
    folds: Optional[str] = typer.Option(None, "--folds", help="Evaluate only these folds (e.g. 1,2); the split protocol has 'test'."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most N queries per fold: a seeded subsample, dataset order kept."),
    methods: str = typer.Option(ALL_METHODS, "--methods", help="Methods, comma-separated: " + ALL_METHODS.replace(",", ", ") + f"; also {OPTIONAL_METHODS}."),
    model: str = typer.Option("HKUSTAudio/Llasa-1B-Multilingual", "--model", "-m", help="LLM: hub id, llasa-1b, local folder or debug."),
    codec: str = typer.Option("HKUSTAudio/xcodec2-hf", "--codec", "-c", help="Codec: hub id, local folder or debug."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default bench-results/hf-<name>)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the --limit subsample and the random baselines."),
    clip_seconds: Optional[float] = typer.Option(None, "--clip-seconds", help="Read each clip up to this long, head kept (default 5 s)."),
    clap_model: Optional[str] = typer.Option(None, "--clap-model", help="CLAP model of clap-zero-shot: hub id or folder."),
    probe_epochs: int = typer.Option(200, "--probe-epochs", help="Epochs of the linear-probe baseline."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Benchmark on any Hugging Face dataset: its fold column (--fold-column) or its own train / test splits."""
    from icl_audio.bench.sources import hub_recipe

    recipe, items, source = hub_recipe(hf, config=hf_config, label_column=label_column, audio_column=audio_column,
                                       fold_column=fold_column, clip_seconds=clip_seconds)
    run_dataset_bench(recipe.name, root=None, k=k, mode=mode, folds=folds, limit=limit, methods=methods, model=model,
                      codec=codec, out=out, device=device, seed=seed, protocol=None, as_json=as_json, quiet=quiet,
                      clip_seconds=clip_seconds, clap_model=clap_model, probe_epochs=probe_epochs, recipe=recipe,
                      items=items, source=source)


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
