"""`icl-audio bench ...`: speed benchmarks of the scorer and the codec, and the ARCH benchmark."""

from __future__ import annotations

import json

import typer

from icl_audio.cli import bench_app


@bench_app.command("speed")
def speed(
    labels: int = typer.Option(50, "--labels", help="Number of candidate labels (ESC-50 has 50)."),
    k: int = typer.Option(4, "--k", help="Demonstrations in the prompt (250 audio tokens each)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Scorer speed at the real Llasa-1B shape (random weights): shared-prefix engine vs naive."""
    from icl_audio.bench.speed import run_speed_bench

    result = run_speed_bench(labels=labels, k=k)
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
