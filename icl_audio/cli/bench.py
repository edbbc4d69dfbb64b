"""`icl-audio bench ...`: speed benchmarks of the scorer and the codec, and the ARCH benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from icl_audio.cli import bench_app
from icl_audio.constants import (  # stdlib only: `icl-audio --help` stays fast
    BENCH_METHODS,
    DEFAULT_BENCH_METHODS,
    DEFAULT_CODEC,
    DEFAULT_EPISODE_METHODS,
    DEFAULT_LLM,
    SCORING_MODES,
)
from icl_audio.recipes import ARCH_DATASETS, RECIPES, get_recipe  # stdlib only too


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
    quant: Optional[str] = typer.Option(None, "--quant", metavar="MODE[,MODE...]", help="int8 or nf4: time the engine on the model loaded quantised (random-llasa-1b, saved once). A list of fp32, bf16, int8, nf4 (e.g. bf16,int8,nf4): compare the modes instead, each in its own process: peak memory, seconds per query, score difference from fp32."),
    episode: bool = typer.Option(False, "--episode", help="Time one N-way K-shot episode instead: one prompt per query "
                                 "against the shared demonstration prefix (--way, --shot, --queries; --labels and --k unused)."),
    way: int = typer.Option(5, "--way", metavar="N", help="--episode: classes (the candidates)."),
    shot: int = typer.Option(5, "--shot", metavar="K", help="--episode: demonstrations per class."),
    queries: int = typer.Option(1, "--queries", metavar="Q", help="--episode: queries per class."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Scorer speed at the real Llasa-1B shape (random weights): the engine against the arithmetic floor and naive."""
    from icl_audio.errors import ICLAudioError

    if mode not in SCORING_MODES:
        raise ICLAudioError(f"unknown mode {mode!r}: use direct or channel")
    if labels < 1 or k < 0 or reps < 1:
        raise ICLAudioError("--labels and --reps must be >= 1 and --k >= 0")
    _progress_to_stderr()
    if quant is not None:
        if episode:
            raise ICLAudioError("--quant times the label scorer: give it without --episode")
        from icl_audio.bench.quantization import compared_modes

        modes = compared_modes(quant)
        if modes is not None:  # a list: each mode in its own process, against fp32
            from icl_audio.bench.quantization import format_table, run_quant_bench

            result = run_quant_bench(labels=labels, k=k, reps=reps, modes=modes)
            print(json.dumps(result) if as_json else format_table(result))
            return
        from icl_audio.quant import quant_mode

        quant = quant_mode(quant)  # an unknown mode is one line, before the model is built
    if episode:
        if way < 2 or shot < 1 or queries < 1:
            raise ICLAudioError("--way must be >= 2, --shot and --queries >= 1")
        from icl_audio.bench.speed_episode import run_episode_speed_bench

        result = run_episode_speed_bench(way=way, shot=shot, queries=queries, reps=reps, mode=mode)
    else:
        from icl_audio.bench.speed import run_speed_bench

        result = run_speed_bench(labels=labels, k=k, reps=reps, mode=mode, quant=quant)
    if as_json:
        print(json.dumps(result))
    else:
        from icl_audio.cli.render import print_mapping

        print_mapping("episode scoring speed" if episode else "scorer speed", result)


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
    quant: Optional[str] = typer.Option(None, "--quant", help="Load the LLM quantised: int8 or nf4 (bitsandbytes)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Peak memory of each stage (load, encode, embed, index, score) at the real shapes, per support-set size."""
    from icl_audio.bench.memory import MemoryBenchConfig, format_table, run_memory_bench
    from icl_audio.errors import ICLAudioError

    from icl_audio.quant import quant_mode

    quant = quant_mode(quant)  # an unknown mode is one line, before anything loads
    try:
        config = MemoryBenchConfig(clips=tuple(int(n) for n in clips.split(",")), seconds=seconds, labels=labels, k=k,
                                   model=model, codec=codec, quant=quant)
    except ValueError as exc:
        raise ICLAudioError(f"bench memory: {exc}") from None
    _progress_to_stderr()
    result = run_memory_bench(config)
    print(json.dumps(result) if as_json else format_table(result))


# ---------------------------------------------------------------------------------------------
# The ARCH benchmark: one command per dataset recipe, and `suite` for several at once.

ALL_METHODS = ",".join(DEFAULT_BENCH_METHODS)
EPISODE_METHODS = ",".join(DEFAULT_EPISODE_METHODS)
OPTIONAL_METHODS = ",".join(sorted(set(BENCH_METHODS) - set(DEFAULT_BENCH_METHODS)))


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


def run_dataset_bench(dataset: str, *, root: Optional[Path], k: Optional[str], mode: str, folds: Optional[str],
                      limit: Optional[int], methods: Optional[str], model: str, codec: str, out: Optional[Path], device: str,
                      seed: int, protocol: Optional[str], as_json: bool, quiet: bool, clip_seconds: Optional[float] = None,
                      clap_model: Optional[str] = None, probe_epochs: int = 200, episodes: Optional[int] = None,
                      way: Optional[int] = None, shot: Optional[str] = None, queries: Optional[int] = None,
                      episodes_file: Optional[Path] = None, source: Optional[str] = None, kfold: Optional[int] = None,
                      hf: Optional[str] = None, hf_config: Optional[str] = None, audio_root: Optional[Path] = None,
                      recipe=None, items=None, source_name: Optional[str] = None) -> None:
    """Run one source's bench (torchrun-aware) and print its summary (rank 0 only).

    ``source``: "folder" / "csv" for the user's own data at ``root``; ``recipe``/``items``/``source_name``:
    a recipe made at run time, its items and what to call their source (``bench hf``)."""
    from icl_audio.bench.arch import run_bench
    from icl_audio.bench.config import BenchConfig
    from icl_audio.bench.distributed import from_env
    from icl_audio.bench.report import jsonable, print_summary
    from icl_audio.cli.render import ProgressBars, stderr_console

    dist = from_env()
    cfg = BenchConfig(dataset=dataset, root=root, ks=k, modes=mode, folds=folds, limit=limit, methods=methods,
                      model=model, codec=codec, out=out, device=device, seed=seed, protocol=protocol,
                      clip_seconds=clip_seconds, probe_epochs=probe_epochs, episodes=episodes, way=way, shots=shot,
                      queries=queries, episodes_file=episodes_file, source=source, kfold=kfold, hf=hf, hf_config=hf_config,
                      audio_root=audio_root,
                      **({"clap_model": clap_model} if clap_model else {}))
    try:
        with ProgressBars(enabled=not quiet and dist.is_main) as bars:
            outcome = run_bench(cfg, dist=dist, progress_factory=bars.bar, recipe=recipe, items=items, source=source_name)
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
    elif outcome.results["protocol"] in ("episodes", "metaaudio"):
        from icl_audio.bench.episode_report import print_episode_summary

        print_episode_summary(outcome.results)
    else:
        print_summary(outcome.results)


# Options every source's command shares (dataset recipes, folder, csv): (name, typer.Option) pairs.
def _common_options(default_out: str, clip_help: str) -> dict:
    return dict(
        k=typer.Option(None, "--k", help="Demonstration counts of the fold protocol, comma-separated (0 = zero-shot; default 0,1,4,8)."),
        mode=typer.Option("direct,channel", "--mode", help="Scoring modes of the icl methods: direct, channel."),
        folds=typer.Option(None, "--folds", help="Evaluate only these folds (e.g. 1,2); split datasets have 'test'. With episodes: draw only from these."),
        limit=typer.Option(None, "--limit", help="At most N queries per fold: a seeded subsample, dataset order kept."),
        methods=typer.Option(None, "--methods", help="Methods, comma-separated. Folds: " + ALL_METHODS.replace(",", ", ")
                             + f" (default), also {OPTIONAL_METHODS}; linear-probe always runs. Episodes: "
                             + EPISODE_METHODS.replace(",", ", ") + f" (default), also {OPTIONAL_METHODS}."),
        model=typer.Option(DEFAULT_LLM, "--model", "-m", help="LLM: hub id, llasa-1b, local folder or debug."),
        codec=typer.Option(DEFAULT_CODEC, "--codec", "-c", help="Codec: hub id, local folder or debug."),
        out=typer.Option(None, "--out", help=f"Output folder (default {default_out})."),
        device=typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)."),
        seed=typer.Option(0, "--seed", help="Seeds the --limit subsample, the episodes, k-fold and the random baselines."),
        clip_seconds=typer.Option(None, "--clip-seconds", help=clip_help),
        clap_model=typer.Option(None, "--clap-model", help="CLAP model of clap-zero-shot: hub id or folder (default laion/clap-htsat-unfused)."),
        probe_epochs=typer.Option(200, "--probe-epochs", help="Epochs of the linear-probe baseline (ARCH's default 200)."),
        episodes=typer.Option(None, "--episodes", metavar="T", help="Run T N-way K-shot episodes per K instead of the fold protocol "
                              "(MetaAudio's 10,000 take days on a CPU: lower T to try it)."),
        way=typer.Option(None, "--way", metavar="N", help="Episodes: classes per episode (default 5)."),
        shot=typer.Option(None, "--shot", metavar="K", help="Episodes: support clips per class, comma-separated (default 1; MetaAudio 1,5)."),
        queries=typer.Option(None, "--queries", metavar="Q", help="Episodes: query clips per class (default 1)."),
        episodes_file=typer.Option(None, "--episodes-file", help="Run exactly these episodes: an episodes.jsonl of an earlier "
                                   "run, or a UniAudio .scp list (class/file.wav entries relative to --root, the query last)."),
        as_json=typer.Option(False, "--json", help="Print results.json instead of the table."),
        quiet=typer.Option(False, "--quiet", "-q", help="No progress bars."),
    )


def _dataset_command(dataset: str):
    recipe = RECIPES[dataset]
    hub = f" (or --hf {recipe.hub.dataset})" if recipe.hub else ""
    o = _common_options(f"bench-results/{dataset}", f"Read each clip up to this long, head kept (default: {recipe.clip_seconds:g} s"
                        + (", ARCH's)." if dataset in ARCH_DATASETS else ")."))

    def command(
        root: Optional[Path] = typer.Option(None, "--root", help=f"The {recipe.title or dataset} folder, in its official layout ({recipe.layout}){hub}."),
        hf: Optional[str] = typer.Option(None, "--hf", metavar="OWNER/NAME|FOLDER", help=(
            f"Its Hugging Face hub copy in place of --root ({recipe.hub.dataset}, or a local copy with its columns; "
            f"{recipe.hub.note}); pip install 'icl-audio[hf]'." if recipe.hub else "No hub copy is known for this dataset."),
            hidden=recipe.hub is None),
        hf_config: Optional[str] = typer.Option(None, "--config", help="--hf: the dataset's config.", hidden=recipe.hub is None),
        audio_root: Optional[Path] = typer.Option(None, "--audio-root", help=f"{recipe.audio_root} (default: beside --root).",
                                                  hidden=recipe.audio_root is None),
        k: Optional[str] = o["k"], mode: str = o["mode"], folds: Optional[str] = o["folds"], limit: Optional[int] = o["limit"],
        methods: Optional[str] = o["methods"], model: str = o["model"], codec: str = o["codec"], out: Optional[Path] = o["out"],
        device: str = o["device"], seed: int = o["seed"],
        protocol: Optional[str] = typer.Option(None, "--protocol", help="folds or splits, where a dataset has both (RAVDESS); "
                                               "metaaudio: MetaAudio's ESC-50 episodes (5-way, K = 1 and 5, 10,000 episodes: "
                                               "days on a CPU, lower them with --episodes)."),
        clip_seconds: Optional[float] = o["clip_seconds"], clap_model: Optional[str] = o["clap_model"],
        probe_epochs: int = o["probe_epochs"], episodes: Optional[int] = o["episodes"], way: Optional[int] = o["way"],
        shot: Optional[str] = o["shot"], queries: Optional[int] = o["queries"], episodes_file: Optional[Path] = o["episodes_file"],
        as_json: bool = o["as_json"], quiet: bool = o["quiet"],
    ) -> None:
        run_dataset_bench(dataset, root=root, k=k, mode=mode, folds=folds, limit=limit, methods=methods, model=model,
                          codec=codec, out=out, device=device, seed=seed, protocol=protocol, as_json=as_json, quiet=quiet,
                          clip_seconds=clip_seconds, clap_model=clap_model, probe_epochs=probe_epochs, episodes=episodes,
                          way=way, shot=shot, queries=queries, episodes_file=episodes_file, hf=hf, hf_config=hf_config,
                          audio_root=audio_root)

    command.__doc__ = (
        f"Benchmark on {recipe.title or dataset}: {'ARCH' if dataset in ARCH_DATASETS else 'its'} folds or splits (in-context "
        f"learning beside k-NN, a linear probe, majority and random baselines) or N-way K-shot episodes (--episodes, "
        f"--protocol metaaudio); resumable, scales out under torchrun."
    )
    command.__name__ = f"bench_{dataset.replace('-', '_')}"
    return command


def _own_data_command(kind: str):
    o = _common_options(f"bench-results/{kind}-<name>", "Read each clip up to this long, head kept (default 30 s).")
    where = (typer.Option(..., "--root", help="A folder with one sub-folder of clips per label (as support build --folder).")
             if kind == "folder" else
             typer.Option(..., "--csv", help="A CSV with columns path,label[,split][,fold] (as support build --csv; ';' separates labels)."))

    def command(
        source_path: Path = where,
        kfold: Optional[int] = typer.Option(None, "--kfold", metavar="N", help="Stratified N-fold cross-validation (default 5, "
                                            "unless a CSV gives its own fold or train/test split columns)."),
        k: Optional[str] = o["k"], mode: str = o["mode"], folds: Optional[str] = o["folds"], limit: Optional[int] = o["limit"],
        methods: Optional[str] = o["methods"], model: str = o["model"], codec: str = o["codec"], out: Optional[Path] = o["out"],
        device: str = o["device"], seed: int = o["seed"], clip_seconds: Optional[float] = o["clip_seconds"],
        clap_model: Optional[str] = o["clap_model"], probe_epochs: int = o["probe_epochs"], episodes: Optional[int] = o["episodes"],
        way: Optional[int] = o["way"], shot: Optional[str] = o["shot"], queries: Optional[int] = o["queries"],
        episodes_file: Optional[Path] = o["episodes_file"], as_json: bool = o["as_json"], quiet: bool = o["quiet"],
    ) -> None:
        run_dataset_bench(kind, root=source_path, k=k, mode=mode, folds=folds, limit=limit, methods=methods, model=model,
                          codec=codec, out=out, device=device, seed=seed, protocol=None, as_json=as_json, quiet=quiet,
                          clip_seconds=clip_seconds, clap_model=clap_model, probe_epochs=probe_epochs, episodes=episodes,
                          way=way, shot=shot, queries=queries, episodes_file=episodes_file, source=kind, kfold=kfold)

    what = "a folder of labelled sub-folders" if kind == "folder" else "a CSV of labelled clips"
    command.__doc__ = (f"Benchmark on your own data ({what}): stratified k-fold cross-validation with the fold protocol's "
                       "methods, or N-way K-shot episodes over its classes (--episodes); same reports, same resume.")
    command.__name__ = f"bench_{kind}"
    return command


for _name in RECIPES:
    bench_app.command(_name)(_dataset_command(_name))
for _kind in ("folder", "csv"):
    bench_app.command(_kind)(_own_data_command(_kind))


_HF_OPTIONS = _common_options("bench-results/hf-<name>", "Read each clip up to this long, head kept (default 5 s).")


@bench_app.command("hf")
def bench_hf(
    hf: str = typer.Option(..., "--hf", metavar="OWNER/NAME|FOLDER", help="A Hugging Face dataset: hub id, save_to_disk folder or folder of parquet files (pip install 'icl-audio[hf]')."),
    hf_config: Optional[str] = typer.Option(None, "--config", help="The dataset's config."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="The label column [default: the only ClassLabel column, or 'label']."),
    audio_column: str = typer.Option("audio", "--audio-column", help="The audio column."),
    fold_column: Optional[str] = typer.Option(None, "--fold-column", help="Fold protocol: leave one fold of this column out. "
                                              "Without it: the dataset's own train / test splits, else stratified k-fold."),
    kfold: Optional[int] = typer.Option(None, "--kfold", metavar="N", help="Stratified N-fold cross-validation (default 5 "
                                        "when the dataset has neither a fold column named nor train and test splits)."),
    k: Optional[str] = _HF_OPTIONS["k"], mode: str = _HF_OPTIONS["mode"], folds: Optional[str] = _HF_OPTIONS["folds"],
    limit: Optional[int] = _HF_OPTIONS["limit"], methods: Optional[str] = _HF_OPTIONS["methods"],
    model: str = _HF_OPTIONS["model"], codec: str = _HF_OPTIONS["codec"], out: Optional[Path] = _HF_OPTIONS["out"],
    device: str = _HF_OPTIONS["device"], seed: int = _HF_OPTIONS["seed"], clip_seconds: Optional[float] = _HF_OPTIONS["clip_seconds"],
    clap_model: Optional[str] = _HF_OPTIONS["clap_model"], probe_epochs: int = _HF_OPTIONS["probe_epochs"],
    episodes: Optional[int] = _HF_OPTIONS["episodes"], way: Optional[int] = _HF_OPTIONS["way"],
    shot: Optional[str] = _HF_OPTIONS["shot"], queries: Optional[int] = _HF_OPTIONS["queries"],
    episodes_file: Optional[Path] = _HF_OPTIONS["episodes_file"], as_json: bool = _HF_OPTIONS["as_json"],
    quiet: bool = _HF_OPTIONS["quiet"],
) -> None:
    """Benchmark on any Hugging Face dataset: its fold column, its own train / test splits, stratified k-fold
    cross-validation, or N-way K-shot episodes over its classes (--episodes); same reports, same resume."""
    from icl_audio.bench.sources import hub_recipe

    recipe, items, source = hub_recipe(hf, config=hf_config, label_column=label_column, audio_column=audio_column,
                                       fold_column=fold_column, clip_seconds=clip_seconds, kfold=kfold, seed=seed,
                                       episodes=episodes is not None or episodes_file is not None)
    run_dataset_bench(recipe.name, root=None, k=k, mode=mode, folds=folds, limit=limit, methods=methods, model=model,
                      codec=codec, out=out, device=device, seed=seed, protocol=None, as_json=as_json, quiet=quiet,
                      clip_seconds=clip_seconds, clap_model=clap_model, probe_epochs=probe_epochs, episodes=episodes,
                      way=way, shot=shot, queries=queries, episodes_file=episodes_file, recipe=recipe, items=items,
                      source_name=source)


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
