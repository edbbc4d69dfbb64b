"""`icl-audio prompt`: show exactly what the model is fed for each clip (built on classify's code path)."""

from __future__ import annotations

import json
import re
from typing import List, Literal, Optional

import typer

from icl_audio.cli import app
from icl_audio.constants import LLASA_CONTEXT  # stdlib only

_SPEECH_RUN = re.compile(r"(?:<\|s_\d+\|>)+")


def abbreviate_speech(text: str) -> str:
    """Runs of speech tokens as ``<|s_×N|>``: a 5 s clip is 250 of them."""
    return _SPEECH_RUN.sub(lambda m: f"<|s_×{m.group(0).count('<|s_')}|>", text)


@app.command("prompt")
def prompt(
    audio: List[str] = typer.Argument(..., metavar="AUDIO", help="Audio files (wav, flac, ogg, mp3, ...)."),
    support: str = typer.Option(..., "--support", "-s", metavar="FOLDER|CSV|hf:ID|NAME", help="As for classify."),
    k: int = typer.Option(4, "--k", metavar="N", help="Demonstrations retrieved per query (0 = zero-shot)."),
    labels: Optional[str] = typer.Option(None, "--labels", metavar="A,B,...", help="Candidate labels, comma-separated (default: the support set's)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="ID|FOLDER", help="LLM, as for classify."),
    codec: Optional[str] = typer.Option(None, "--codec", "-c", metavar="ID|FOLDER", help="Codec, as for classify."),
    mode: Literal["direct", "channel"] = typer.Option("direct", "--mode", help="direct: log p(label | audio); channel: log p(audio | label)."),
    template: Optional[str] = typer.Option(None, "--template", metavar="NAME|FILE.toml", help="Prompt template [default: llasa]."),
    mask_eot: Optional[bool] = typer.Option(None, "--mask-eot/--attend-eot", help="Hide <|eot_id|> from attention [default: the template's choice]."),
    balanced: bool = typer.Option(False, "--balanced", help="Class-balanced retrieval."),
    max_context: int = typer.Option(LLASA_CONTEXT, "--max-context", metavar="TOKENS", help="Token budget of a prompt."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda|cuda:N", help="Where the models run."),
    no_weight_check: bool = typer.Option(False, "--no-weight-check", help="As for classify."),
    as_json: bool = typer.Option(False, "--json", help='One JSON object per clip: {"prompt_ids", "candidates", "demonstrations", "hidden_ids"}.'),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Print the prompt and every candidate continuation the model scores for each AUDIO clip.

    prompt_ids + candidates[i].ids is the whole sequence scored for candidate i; ids[scored_from:] are
    its scored tokens; hidden_ids take a position but are never attended to."""
    from icl_audio.cli.classify import fit_support, open_classifier, report_failures

    clf, source = open_classifier(audio, support, k=k, labels=labels, model=model, codec=codec, mode=mode,
                                  normalize="sum", calibrate=False, balanced=balanced, template=template,
                                  mask_eot=mask_eot, max_context=max_context, device=device, int8=False,
                                  check_weights=not no_weight_check)
    from icl_audio.classifier import Failure, _candidate_labels
    from icl_audio.cli.classify import _split_labels
    from icl_audio.cli.render import ProgressBars, stderr_console

    candidates = _split_labels(labels)
    clf.codec_model
    failures = []
    with ProgressBars(enabled=not quiet) as bars:
        fit_support(clf, source, bars, stderr_console(), quiet)
        for result in clf.iter_prompts(audio, candidates, on_error="skip"):
            if isinstance(result, Failure):
                failures.append(result)
                continue
            src, built, demos = result
            labs = _candidate_labels(candidates, clf.support_)
            record = {
                "audio": src,
                "prompt_ids": list(built.prefix),
                "candidates": [{"label": lab, "ids": list(t.ids), "scored_from": t.score_from}
                               for lab, t in zip(labs, built.targets)],
                "demonstrations": [{"path": d.source, "label": d.label, "similarity": round(float(d.similarity), 6)}
                                   for d in demos],
                "hidden_ids": sorted(built.hidden_ids),
            }
            if as_json:
                print(json.dumps(record, ensure_ascii=False), flush=True)
            else:
                _print_text(clf.lm, record)
    report_failures(failures, len(audio))


def _print_text(lm, record: dict) -> None:
    from icl_audio.prompt import render_text

    print(f"== {record['audio']}")
    print(abbreviate_speech(render_text(lm, record["prompt_ids"])))
    for c in record["candidates"]:
        context = render_text(lm, c["ids"][: c["scored_from"]])
        scored = render_text(lm, c["ids"][c["scored_from"]:])
        print(f"-- {c['label']}: {abbreviate_speech(context)}[scored: {abbreviate_speech(scored)}]")
