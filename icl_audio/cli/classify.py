"""`icl-audio classify`: rank candidate labels for audio clips."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Literal, Optional

import typer

from icl_audio.cli import app

from icl_audio.constants import LLASA_CONTEXT, NORMALIZE, SCORING_MODES as MODES  # noqa: F401 (stdlib only: --help stays fast)


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


def check_inputs(paths: list[str]) -> None:
    """One line (AudioError, exit 2), before any model loads, for inputs that are missing, folders or
    unreadable, and when no input at all can be audio (each file's header read:
    :func:`icl_audio.audio.check_audio_header`). Files whose header is bad among good ones are left
    to the run, which skips and reports them one by one."""
    from icl_audio.audio import check_audio_header
    from icl_audio.errors import AudioError

    problems = []
    for name in paths:
        path = Path(name).expanduser()
        if not path.exists():
            problems.append(f"{name}: no such file")
        elif path.is_dir():
            problems.append(f"{name}: is a directory, not an audio file")
        elif not os.access(path, os.R_OK):
            problems.append(f"{name}: not readable (permission denied)")
    if len(problems) == 1:
        raise AudioError(problems[0])
    if problems:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise AudioError(f"{len(problems)} of {len(paths)} inputs cannot be read: {shown}")
    bad = []
    for name in paths:
        try:
            check_audio_header(Path(name).expanduser())
        except AudioError as exc:
            bad.append(str(exc))
        else:
            return  # one good input: the run goes on, and reports the bad ones as it meets them
    if len(bad) == 1:
        raise AudioError(bad[0])
    shown = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
    raise AudioError(f"none of the {len(paths)} inputs is audio that can be read: {shown}")


QUANT_HELP = ("Load the LLM's weights quantised with bitsandbytes: int8 (LLM.int8(), about half the memory of bf16) "
              "or nf4 (4-bit, about a third); pip install 'icl-audio[int8]'.")
INT8_HELP = "Short for --quant int8."
WEIGHT_CHECK_HELP = ("Load checkpoints whose tensor names or shapes do not fit the architecture (their keys are "
                     "printed as a warning; those weights stay random). Default: refuse them.")


@app.command("classify")
def classify(
    audio: List[str] = typer.Argument(..., metavar="AUDIO", help="Audio files to classify (wav, flac, ogg, mp3, ...)."),
    support: str = typer.Option(
        ..., "--support", "-s", metavar="FOLDER|CSV|hf:ID|NAME",
        help="A folder with one sub-folder of clips per label, a CSV (path,label), a Hugging Face dataset "
             "hf:OWNER/NAME[:CONFIG][@SPLIT] (or hf:/path/to/folder; label column: its only ClassLabel column or "
             "'label'), or a stored set's name (./NAME for a folder named like a set).",
    ),
    k: int = typer.Option(4, "--k", metavar="N", help="Demonstrations retrieved per query (0 = zero-shot)."),
    labels: Optional[str] = typer.Option(None, "--labels", metavar="A,B,...", help="Candidate labels, comma-separated (default: the support set's)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="ID|FOLDER", help="LLM: hub id (the default is gated: accept its terms on its page, then `hf auth login`), local folder, 'llasa-1b', 'debug' or 'random-llasa-1b' (random weights, real size) [default: HKUSTAudio/Llasa-1B-Multilingual, or the stored set's]."),
    codec: Optional[str] = typer.Option(None, "--codec", "-c", metavar="ID|FOLDER", help="Codec: hub id, local folder, 'debug' or 'random-xcodec2' (random weights, real size) [default: HKUSTAudio/xcodec2-hf, or the stored set's]."),
    top: Optional[int] = typer.Option(None, "--top", metavar="N", help="Show only the N best labels."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per clip per line on stdout, as each clip is done."),
    mode: Literal["direct", "channel"] = typer.Option("direct", "--mode", help="direct: log p(label | audio); channel: log p(audio | label)."),
    normalize: Literal["sum", "mean"] = typer.Option("sum", "--normalize", help="Label score: sum of token log-probabilities, or their mean."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Contextual calibration: divide out the label prior of a content-free query."),
    balanced: bool = typer.Option(False, "--balanced", help="Class-balanced retrieval: the nearest clips of each candidate label in turn."),
    template: Optional[str] = typer.Option(None, "--template", metavar="NAME|FILE.toml", help="Prompt template: llasa, uniaudio (see prompts/) or a .toml path [default: llasa, Llasa's training format]."),
    mask_eot: Optional[bool] = typer.Option(None, "--mask-eot/--attend-eot", help="Hide <|eot_id|> from attention as Llasa's training did, or attend to it [default: the template's choice]."),
    max_context: int = typer.Option(LLASA_CONTEXT, "--max-context", metavar="TOKENS", help=f"Token budget of a prompt (Llasa was trained on {LLASA_CONTEXT})."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda|cuda:N", help="Where the models run (auto: the GPU if there is one)."),
    quant: Optional[str] = typer.Option(None, "--quant", metavar="int8|nf4", help=QUANT_HELP),
    int8: bool = typer.Option(False, "--int8", help=INT8_HELP),
    no_weight_check: bool = typer.Option(False, "--no-weight-check", help=WEIGHT_CHECK_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Classify AUDIO clips by in-context learning against a support set."""
    from icl_audio.errors import ICLAudioError

    if top is not None and top < 1:
        raise ICLAudioError(f"--top must be >= 1, got {top}")
    clf, source = open_classifier(audio, support, k=k, labels=labels, model=model, codec=codec, mode=mode,
                                  normalize=normalize, calibrate=calibrate, balanced=balanced, template=template,
                                  mask_eot=mask_eot, max_context=max_context, device=device, int8=int8,
                                  quant=quant, check_weights=not no_weight_check)
    candidates = _split_labels(labels)

    # -- the models, then the work --------------------------------------------------------------
    from icl_audio.classifier import Failure
    from icl_audio.cli.render import ProgressBars, print_prediction_table, stderr_console

    clf.codec_model  # loads the LLM, then the codec: a missing model is one line, before any bar
    console = stderr_console()
    predictions, failures, short_k, min_used = [], [], 0, k
    with ProgressBars(enabled=not quiet) as bars:
        sset = fit_support(clf, source, bars, console, quiet)
        results = clf.iter_classify(audio, candidates, on_error="skip", progress=bars.bar(len(audio), "encoding queries"))
        for result in results:
            if isinstance(result, Failure):
                failures.append(result)
                continue
            if result.demos_used < k:
                short_k, min_used = short_k + 1, min(min_used, result.demos_used)
            if as_json:
                print(json.dumps(result.to_dict(top), ensure_ascii=False), flush=True)
            else:
                predictions.append(result)

    done = len(audio) - len(failures)
    if short_k:
        console.print(
            f"[yellow]note:[/] {short_k} of {done} prompts used fewer than k={k} demonstrations "
            f"(support size {len(sset)} or the {clf.scoring_options.max_context}-token budget; min used {min_used})"
        )
    for p in predictions:
        print_prediction_table(p, top)
    report_failures(failures, len(audio))


def report_failures(failures: list, total: int) -> None:
    for f in failures:
        print(f"error: {f.error}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {total} inputs failed", file=sys.stderr)
        raise typer.Exit(1)


def fit_support(clf, source, bars, console, quiet: bool):
    """Load or build the support set ``source`` names (with a progress bar) and fit ``clf`` on it."""
    from icl_audio import support as store

    bar = None if source.stored else bars.bar(len(source.items), "encoding support clips")
    sset, report = store.open_support(source, clf.codec_model, clf.lm, cache=clf.cache, max_seconds=clf.max_seconds, progress=bar)
    clf.fit_support(sset)
    if report is not None and not quiet:
        console.print(f"support: {len(sset)} clips, {len(sset.classes)} labels ({report.encoded} encoded, {report.reused} from cache)")
        for path, why in report.skipped:
            console.print(f"skipped support clip: {why}", markup=False)
    return sset


def open_classifier(audio: list[str], support: str, *, k: int, labels: str | None, model: str | None,
                    codec: str | None, mode: str, normalize: str, calibrate: bool, balanced: bool,
                    template: str | None, mask_eot: bool | None, max_context: int, device: str, int8: bool,
                    quant: str | None = None, check_weights: bool = True):
    """Everything ``classify`` and ``prompt`` check before a model loads (one line each), then an
    unloaded :class:`ICLClassifier` (its models load through :mod:`icl_audio.models`) and the parsed
    ``--support``."""
    from icl_audio.errors import ICLAudioError

    if k < 0:
        raise ICLAudioError(f"--k must be >= 0, got {k}")
    _split_labels(labels)
    check_inputs(audio)

    from icl_audio import support as store
    from icl_audio.classifier import ICLClassifier
    from icl_audio.constants import DEFAULT_CODEC, DEFAULT_LLM
    from icl_audio.errors import SupportSetError
    from icl_audio.scoring import ScoringOptions

    try:
        source = store.parse_support_spec(support)
    except store.NotBuiltError:
        flags = (f" --model {model}" if model else "") + (f" --codec {codec}" if codec else "")
        raise SupportSetError(
            f"support set {support!r} is not built yet; build it once with: "
            f"icl-audio support build {support} --dataset {support} --root /path/to/{support}{flags}"
        ) from None
    if source.stored:
        # A stored set fixes the model and codec it was built with: its codes and embeddings only
        # make sense with those.
        for flag, given, built in (("--model", model, source.model), ("--codec", codec, source.codec)):
            if given is not None and given != built:
                raise SupportSetError(f"support set {support!r} was built with {flag} {built}; got {flag} {given}")
        model, codec = source.model, source.codec
    clf = ICLClassifier(  # checks every option (mode, template, device, ...) before loading anything
        model=model or DEFAULT_LLM, codec=codec or DEFAULT_CODEC, k=k, scoring=ScoringOptions(mask_eot=mask_eot),
        mode=mode, normalize=normalize, calibrate=calibrate, template=template, max_context=max_context,
        balanced=balanced, device=device, int8=int8, quant=quant, check_weights=check_weights,
    )
    return clf, source
