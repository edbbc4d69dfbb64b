"""The `icl-audio` command line: a thin Typer layer; heavy imports happen inside commands."""

from __future__ import annotations

import os
import sys

import typer

app = typer.Typer(
    name="icl-audio",
    help="Classify audio by in-context learning with a frozen speech LLM (Llasa) over XCodec2 codes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: option texts are not rich markup, so "icl-audio[int8]" or "path,label[,split]" print
    # as written instead of being swallowed as style tags.
    rich_markup_mode=None,
)
support_app = typer.Typer(help="Build, list, inspect and remove named support sets.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: ARCH datasets, scorer speed, codec speed.", no_args_is_help=True)
app.add_typer(support_app, name="support")
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    if debug:
        os.environ["ICL_AUDIO_DEBUG"] = "1"


# Register the commands (these modules import nothing heavy at import time).
from icl_audio.cli import bench as _bench  # noqa: E402,F401
from icl_audio.cli import classify as _classify  # noqa: E402,F401
from icl_audio.cli import prompt as _prompt  # noqa: E402,F401
from icl_audio.cli import support as _support  # noqa: E402,F401


def _terminate_as_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C, so `kill` unwinds through the same clean-up (temp files removed)."""
    import signal

    def _raise(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread (e.g. called from a test harness thread)
        pass


def _plain_warnings() -> None:
    """Print our warnings as one `warning: ...` line on stderr (not Python's file:line form)."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def _plain_logging() -> None:
    """icl-audio's own log warnings (notes about random weights, weight-check warnings) as plain lines
    on stderr, whatever logging configuration the process has. The stream is looked up at each
    record, so a redirected stderr is honoured."""
    import logging

    class StderrLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            print(record.getMessage(), file=sys.stderr)

    logger = logging.getLogger("icl_audio")
    if not any(getattr(h, "icl_audio_cli", False) for h in logger.handlers):
        handler = StderrLines(logging.WARNING)
        handler.icl_audio_cli = True
        logger.addHandler(handler)


def quiet_third_parties() -> None:
    """Keep stderr to the CLI's own lines: no third-party warnings, logging chatter or tqdm bars.

    Python warnings are shown only when raised from icl_audio's own code; transformers and
    huggingface_hub read their verbosity and progress-bar settings from the environment when first
    imported, which happens later, inside the commands. `--debug` skips all this.
    """
    import warnings

    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"icl_audio(\.|$)")
    for name, value in (
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),  # datasets' "Generating train split" bars
        ("HF_HUB_VERBOSITY", "error"),
        ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
    ):
        os.environ.setdefault(name, value)


def _one_line_usage_error(exc) -> str:
    # click would print the usage, a "Try --help" line and a blank line; one line is enough.
    message = exc.format_message().replace("Value error, ", "")
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"error: {message}{where}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: runs the app, turning user errors into one line."""
    from icl_audio.errors import ICLAudioError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("ICL_AUDIO_DEBUG"))
    _terminate_as_interrupt()
    _plain_warnings()
    _plain_logging()
    if not debug:
        quiet_third_parties()
    from icl_audio.memory import keep_freed_memory

    keep_freed_memory()  # ~10% faster CPU passes: no page faults on every large tensor
    try:
        # With standalone_mode=False, click returns the code of a `typer.Exit(n)` instead of exiting.
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int):
            return code
    except ICLAudioError as exc:
        if debug:
            raise
        from icl_audio.cli.render import hint_for

        hint = hint_for(exc)
        print(f"error: {exc}{'; ' + hint if hint else ''}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer.Exit inside commands
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # usage errors (typer's own click, or click's) and the like
        import click

        if isinstance(exc, (typer.Abort, click.exceptions.Abort)):
            print("aborted", file=sys.stderr)
            return 130
        if isinstance(exc, (typer.TyperException, click.exceptions.ClickException)) and hasattr(exc, "format_message"):
            print(_one_line_usage_error(exc), file=sys.stderr)
            return int(getattr(exc, "exit_code", 2))
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0
