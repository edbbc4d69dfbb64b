"""`icl-audio classify`: rank candidate labels for audio clips."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from icl_audio.cli import app


def _split_labels(text: str | None) -> list[str] | None:
    if text is None:
        return None
    import csv

    # CSV rules, so a label may hold a comma when quoted: --labels 'dog,"rain, heavy"'
    row = next(csv.reader([text], skipinitialspace=True), [])
    labels = [x.strip() for x in row if x.strip()]
    if not labels:
        from icl_audio.errors import ICLAudioError

        raise ICLAudioError("--labels is empty: give comma-separated labels, e.g. --labels 'dog,cat'")
    return labels


@app.command("classify")
def classify(
    audio: List[str] = typer.Argument(..., help="Audio files to classify (wav, flac, ogg, mp3, ...)."),
    support: str = typer.Option(
        ..., "--support", "-s", help="Folder with one sub-folder of clips per label, a CSV (path,label), or a stored set name."
    ),
    k: int = typer.Option(4, "--k", help="Demonstrations retrieved per query (0 = zero-shot)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Candidate labels, comma-separated (default: the support set's)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="LLM: hub id, local folder, 'llasa-1b' or 'debug' [default: HKUSTAudio/Llasa-1B-Multilingual, or the stored set's]."),
    codec: Optional[str] = typer.Option(None, "--codec", "-c", help="Codec: hub id, local folder or 'debug' [default: HKUSTAudio/xcodec2-hf, or the stored set's]."),
    top: Optional[int] = typer.Option(None, "--top", help="Show only the N best labels."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per clip per line on stdout."),
    mode: str = typer.Option("direct", "--mode", help="direct: log p(label | audio); channel: log p(audio | label)."),
    normalize: str = typer.Option("sum", "--normalize", help="Per-token normalisation of label scores: sum or mean."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Contextual calibration: divide out the label prior of a content-free query."),
    balanced: bool = typer.Option(False, "--balanced", help="Class-balanced retrieval: the nearest clips of each candidate label in turn."),
    template: str = typer.Option("default", "--template", help="Prompt template: a name in prompts/ (default, uniaudio) or a .toml path."),
    max_context: int = typer.Option(2048, "--max-context", help="Token budget of a prompt (Llasa was trained on 2048)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    int8: bool = typer.Option(False, "--int8", help="Load the LLM in 8-bit with bitsandbytes (pip install 'icl-audio[int8]')."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Classify AUDIO clips by in-context learning against a support set."""
    from icl_audio import support as support_store
    from icl_audio.classifier import Failure, ICLClassifier
    from icl_audio.cli.render import ProgressBars, stderr_console
    from icl_audio.constants import DEFAULT_CODEC, DEFAULT_LLM
    from icl_audio.errors import ICLAudioError, SupportSetError

    if k < 0:
        raise ICLAudioError(f"--k must be >= 0, got {k}")
    if top is not None and top < 1:
        raise ICLAudioError(f"--top must be >= 1, got {top}")
    candidates = _split_labels(labels)

    # A stored set fixes the model and codec it was built with: its embeddings and codes only
    # make sense with those.
    # A path wins over a stored set of the same name (resolve_support tries paths first too).
    if not Path(support).expanduser().exists() and support_store.exists(support):
        set_model, set_codec = support_store.stored_models(support)
        for flag, given, built in (("--model", model, set_model), ("--codec", codec, set_codec)):
            if given is not None and given != built:
                raise SupportSetError(f"support set {support!r} was built with {flag} {built}; got {flag} {given}")
        model, codec = set_model, set_codec
    clf = ICLClassifier(
        model=model or DEFAULT_LLM,
        codec=codec or DEFAULT_CODEC,
        k=k,
        mode=mode,
        normalize=normalize,
        calibrate=calibrate,
        template=template,
        max_context=max_context,
        balanced=balanced,
        device=device,
        int8=int8,
    )
    console = stderr_console()
    with ProgressBars(enabled=not quiet) as bars:
        sset, report = support_store.resolve_support(support, clf, progress_factory=bars.bar)
        clf.fit_support(sset)
        if report is not None and not quiet:
            console.print(f"support: {len(sset)} clips, {len(sset.classes)} labels ({report.encoded} encoded, {report.reused} from cache)")
            for path, why in report.skipped:
                console.print(f"skipped support clip: {why}", markup=False)
        results = clf.classify(audio, candidates, on_error="skip", progress=bars.bar(len(audio), "encoding queries"))

    failures = [r for r in results if isinstance(r, Failure)]
    predictions = [r for r in results if not isinstance(r, Failure)]
    short_k = [p for p in predictions if p.demos_used < k]
    if short_k:
        console.print(
            f"[yellow]note:[/] {len(short_k)} of {len(predictions)} prompts used fewer than k={k} demonstrations "
            f"(support size {len(sset)} or the {max_context}-token budget; min used {min(p.demos_used for p in short_k)})"
        )
    if as_json:
        for p in predictions:
            print(json.dumps(p.to_dict(top), ensure_ascii=False))
    else:
        _print_tables(predictions, top)
    for f in failures:
        print(f"error: {f.error}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(results)} inputs failed", file=sys.stderr)
        raise typer.Exit(1)


def _print_tables(predictions, top: int | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    for p in predictions:
        # Labels and paths are user text: render them as Text so "[...]" is never read as markup.
        table = Table(title=Text(p.audio), title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("label")
        table.add_column("score", justify="right")
        n = len(p.labels) if top is None else top
        for rank, (label, score) in enumerate(zip(p.labels[:n], p.scores[:n]), start=1):
            table.add_row(str(rank), Text(label), f"{score:.3f}")
        console.print(table)
        if p.demonstrations:
            demos = ", ".join(f"{d.label} ({d.similarity:.2f})" for d in p.demonstrations)
            console.print(f"  demonstrations: {demos}", highlight=False, markup=False)
