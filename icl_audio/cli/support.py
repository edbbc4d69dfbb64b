"""`icl-audio support ...`: build, list, inspect, remove and download support sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from icl_audio.cli import support_app
from icl_audio.constants import DEFAULT_CODEC, DEFAULT_LLM  # stdlib only


def parse_folds(text: str | None) -> list[int] | None:
    """``"1,2,3"`` -> ``[1, 2, 3]`` (one-line error on anything else)."""
    if text is None:
        return None
    from icl_audio.errors import ICLAudioError

    try:
        folds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ICLAudioError(f"--folds must be comma-separated integers, got {text!r}") from None
    if not folds:
        raise ICLAudioError("--folds is empty")
    return folds


def select_items(items, *, split: str | None = None, folds: list[int] | None = None, per_class: int | None = None, where: str = ""):
    """Keep the items of a split or of some folds, then at most ``per_class`` per (first) label."""
    from icl_audio.errors import SupportSetError

    if split is not None:
        available = sorted({str(it.split) for it in items if it.split is not None})
        items = [it for it in items if it.split == split]
        if not items:
            raise SupportSetError(f"{where}no items in split {split!r} (splits: {', '.join(available) or 'none'})")
    if folds is not None:
        available = sorted({it.fold for it in items if it.fold is not None})
        items = [it for it in items if it.fold in set(folds)]
        if not items:
            raise SupportSetError(f"{where}no items in folds {folds} (folds: {', '.join(map(str, available)) or 'none'})")
    if per_class is not None:
        if per_class < 1:
            raise SupportSetError(f"--per-class must be >= 1, got {per_class}")
        seen: dict[str, int] = {}
        kept = []
        for it in items:
            key = it.labels[0]
            if seen.get(key, 0) < per_class:
                seen[key] = seen.get(key, 0) + 1
                kept.append(it)
        items = kept
    return items


def read_source(*, dataset, root, audio_root, folder, csv_file, hf, config, label_column, audio_column, split):
    """The items a `support build` names (read before any model loads), what to record as their source,
    whether they are multi-label (None: from the items), and the --split still to apply to them."""
    from icl_audio import recipes
    from icl_audio.errors import SupportSetError

    sources = [x for x in (dataset, folder, csv_file, hf if dataset is None else None) if x is not None]
    if len(sources) != 1:
        raise SupportSetError("give exactly one source: --dataset D --root DIR (or --hf ID), --folder DIR, --csv FILE or --hf ID")
    if hf is None and (config is not None or label_column is not None or audio_column != "audio"):
        raise SupportSetError("--config, --label-column and --audio-column go with --hf")
    if audio_root is not None and (dataset is None or root is None):
        raise SupportSetError("--audio-root goes with --dataset D --root DIR")
    if dataset is not None:
        recipe = recipes.get_recipe(dataset)
        if (root is None) == (hf is None):
            hub = f" or --hf {recipe.hub.dataset}" if recipe.hub else ""
            raise SupportSetError(f"--dataset {dataset} needs --root /path/to/{dataset}{hub} (one of them)")
        if hf is not None:
            from icl_audio import hfdata

            if label_column is not None:
                raise SupportSetError(f"--label-column: the {recipe.name} recipe maps its hub copy's columns itself")
            items = hfdata.recipe_items(recipe, hfdata.parse_hf_spec(hf, config=config), audio_column=audio_column)
            return items, {"kind": "dataset", "dataset": recipe.name, "hf": hf}, recipe.multi_label, split
        if audio_root is not None:
            if recipe.audio_root is None:
                raise SupportSetError(f"--audio-root: the {recipe.name} recipe reads its audio from --root")
            items = recipe.prepare(root, audio_root=audio_root)
        else:
            items = recipe.prepare(root)
        return items, {"kind": "dataset", "dataset": recipe.name, "root": str(root.resolve())}, recipe.multi_label, split
    if folder is not None:
        return recipes.from_folder(folder), {"kind": "folder", "path": str(folder.resolve())}, None, split
    if csv_file is not None:
        return recipes.from_csv(csv_file), {"kind": "csv", "path": str(csv_file.resolve())}, None, split
    from icl_audio import hfdata

    spec = hfdata.parse_hf_spec(hf, config=config, split=split)
    items = hfdata.load_items(spec, label_column=label_column, audio_column=audio_column)
    # The split chose the dataset's split already; its items carry the canonical name ("validation" -> "val").
    return items, {"kind": "hf", "spec": hf, "split": spec.split, "label_column": label_column}, None, None


@support_app.command("build")
def build(
    name: str = typer.Argument(..., help="Name to store the set under (letters, digits, . _ -)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset recipe (esc50, us8k, fsd50k, ..., crema-d, gtzan, timit, arca23k-fsd, flusense); needs --root, or --hf for its hub copy."),
    root: Optional[Path] = typer.Option(None, "--root", help="The dataset's folder, in its official layout."),
    audio_root: Optional[Path] = typer.Option(None, "--audio-root", help="ARCA23K-FSD: the FSD50K folder holding its audio (default: beside --root)."),
    folder: Optional[Path] = typer.Option(None, "--folder", help="A folder with one sub-folder of clips per label."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="A CSV with columns path,label[,split] (';' separates labels)."),
    hf: Optional[str] = typer.Option(None, "--hf", metavar="OWNER/NAME|FOLDER", help="A Hugging Face dataset: hub id, save_to_disk folder or folder of parquet files (pip install 'icl-audio[hf]'); with --dataset, the recipe's hub copy."),
    config: Optional[str] = typer.Option(None, "--config", help="--hf: the dataset's config."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="--hf: the label column [default: the only ClassLabel column, or 'label']."),
    audio_column: str = typer.Option("audio", "--audio-column", help="--hf: the audio column."),
    split: Optional[str] = typer.Option(None, "--split", help="Keep one split (e.g. train, test); with --hf alone, the dataset's split [default: train]."),
    folds: Optional[str] = typer.Option(None, "--folds", help="Keep these folds, e.g. 1,2,3."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="At most N clips per label."),
    model: str = typer.Option(DEFAULT_LLM, "--model", "-m", help="LLM whose embeddings index the set (as for classify)."),
    codec: str = typer.Option(DEFAULT_CODEC, "--codec", "-c", help="Codec that encodes the clips (as for classify)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quant: Optional[str] = typer.Option(None, "--quant", metavar="int8|nf4", help="As for classify."),
    no_weight_check: bool = typer.Option(False, "--no-weight-check", help="As for classify."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Encode labelled clips once into a named support set (resumable: a re-run encodes only what is missing)."""
    from icl_audio import support as store
    from icl_audio.cli.render import ProgressBars, stderr_console
    from icl_audio.errors import SupportSetError

    store.validate_name(name)
    if split is not None and folds is not None:
        raise SupportSetError("give --split or --folds, not both")
    items, source, multi_label, split = read_source(dataset=dataset, root=root, audio_root=audio_root, folder=folder,
                                                    csv_file=csv_file, hf=hf, config=config, label_column=label_column,
                                                    audio_column=audio_column, split=split)
    items = select_items(items, split=split, folds=parse_folds(folds), per_class=per_class)
    store.check_models(name, model=model, codec=codec)  # refuse a model/codec change before loading them
    from icl_audio.models import load_pair

    # Both models load, and are checked as a pair, before the bar: a missing model is one line.
    models = load_pair(model, codec, device=device, quant=quant, check_weights=not no_weight_check)
    with ProgressBars(enabled=not quiet) as bars:
        summary = store.build_named_set(
            name, items, model=model, codec=codec, lm=models.lm, codec_model=models.codec, multi_label=multi_label,
            extra={"dataset": source.get("dataset"), "source": source, "split": split, "folds": parse_folds(folds), "per_class": per_class},
            progress_factory=bars.bar,
        )
    console = stderr_console()
    for path, why in summary["skipped"]:
        console.print(f"skipped: {why}", markup=False, highlight=False)
    print(
        f"built {name}: {summary['clips']} clips, {summary['labels']} labels "
        f"({summary['encoded']} encoded, {summary['reused']} reused, {len(summary['skipped'])} skipped)"
    )
    if summary["skipped"]:
        print(f"{len(summary['skipped'])} of {len(items)} clips could not be read", file=sys.stderr)
        raise typer.Exit(1)


def _info(manifest: dict) -> dict:
    return {
        "name": manifest.get("name"),
        "clips": manifest.get("clips"),
        "labels": len(manifest.get("labels", [])),
        "label_counts": manifest.get("label_counts"),
        "multi_label": manifest.get("multi_label", False),
        "dataset": manifest.get("dataset"),
        "clip_seconds": manifest.get("clip_seconds"),  # bench sets: the ARCH clip length their clips were read with
        "codec": manifest.get("codec"),
        "model": manifest.get("model"),
        "created": manifest.get("created"),
    }


@support_app.command("list")
def list_sets(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """List the stored support sets."""
    from icl_audio import support as store

    sets = store.list_support_sets()
    rows = [m if "error" in m else _info(m) for m in sets]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if not rows:
        print("no support sets stored yet (build one with `icl-audio support build`)")
        return
    table = Table()
    for col in ("name", "clips", "labels", "dataset", "model", "codec", "created"):
        table.add_column(col)
    for r in rows:
        if "error" in r:
            table.add_row(Text(r["name"]), "-", "-", "-", Text(r["error"]), "", "")
        else:
            table.add_row(Text(str(r["name"])), str(r["clips"]), str(r["labels"]), str(r["dataset"] or "-"),
                          Text(str(r["model"].get("requested", r["model"].get("id")))), Text(str(r["codec"].get("requested", r["codec"].get("id")))), str(r["created"]))
    Console().print(table)


@support_app.command("info")
def info(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Show a stored set: clips, labels and their counts, dataset, codec, model, creation time."""
    from icl_audio import support as store

    data = _info(store.read_manifest(name))
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    console.print(Text(f"{data['name']}: {data['clips']} clips, {data['labels']} labels, dataset {data['dataset'] or '-'}"))
    console.print(Text(f"model {data['model']}\ncodec {data['codec']}\ncreated {data['created']}"))
    table = Table()
    table.add_column("label")
    table.add_column("clips", justify="right")
    for label, count in data["label_counts"].items():
        table.add_row(Text(label), str(count))
    console.print(table)


@support_app.command("rm")
def rm(name: str = typer.Argument(...)) -> None:
    """Remove a stored set."""
    from icl_audio import support as store

    store.remove_support_set(name)
    print(f"removed {name}")


@support_app.command("download")
def download(
    dataset: str = typer.Argument(..., help="Dataset with a stable public archive (esc50, audiomnist, fma-small, irmas, "
                                  "gtzan); for the others (mtt, crema-d, timit, arca23k-fsd, flusense, ...) it says "
                                  "where to get them."),
    to: Path = typer.Option(..., "--to", help="Folder to download and extract into."),
    sha256: Optional[str] = typer.Option(None, "--checksum", help="Expected checksum of the archive, 'sha256:HEX' (or a bare SHA-256); pins GitHub zips, which publish none."),
    url: Optional[str] = typer.Option(None, "--url", help="Download from this URL instead (a mirror)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download and safely extract a dataset archive (resumable, checksum-verified)."""
    from icl_audio.cli.render import stderr_console
    from icl_audio.download import download_dataset

    progress = None
    if not quiet:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        bar = Progress("downloading", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=stderr_console())
        task = bar.add_task("download", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        bar.start()
    try:
        root = download_dataset(dataset, to, progress=progress, url_override=url, checksum=sha256)
    finally:
        if progress is not None:
            bar.stop()
    print(f"{dataset} is in {root}; build a support set with: icl-audio support build {dataset} --dataset {dataset} --root {root}")
