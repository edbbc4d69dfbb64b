"""Where a bench reads its clips: a recipe's folder (``--root``), its hub copy (``--hf``), or any Hugging
Face dataset with its fold or split column named (``bench hf``), as a recipe made at run time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from icl_audio.bench.config import BenchError

if TYPE_CHECKING:
    from icl_audio.bench.config import BenchConfig
    from icl_audio.recipes import Item, Recipe

#: Clip length of `bench hf` when --clip-seconds is not given: 5 s is 250 codec tokens, so a prompt of
#: 8 demonstrations and the query stays within Llasa's 2,048-token context (ARCH's length for most sets).
HF_CLIP_SECONDS = 5.0


def dataset_items(cfg: "BenchConfig") -> tuple["Recipe", list["Item"], "Path | str"]:
    """(recipe, items, root) of ``cfg.dataset``: read from ``cfg.root`` (its official layout, with
    ``cfg.audio_root`` where the recipe takes one) or from its hub copy ``cfg.hf``. ``root`` names the
    source in support-set names and results: the resolved folder, or ``hf:SOURCE[:CONFIG]``."""
    from icl_audio.recipes import get_recipe

    recipe = get_recipe(cfg.dataset)
    if (cfg.root is None) == (cfg.hf is None):
        hub = f" or --hf {recipe.hub.dataset}" if recipe.hub else ""
        raise BenchError(f"bench {recipe.name} needs --root /path/to/{recipe.name}{hub} (one of them)")
    if cfg.hf is not None:
        from icl_audio import hfdata

        spec = hfdata.parse_hf_spec(cfg.hf, config=cfg.hf_config)
        return recipe, hfdata.recipe_items(recipe, spec), hfdata.describe_source(spec)
    root = Path(cfg.root).expanduser().resolve()
    if cfg.audio_root is not None:
        if recipe.audio_root is None:
            raise BenchError(f"--audio-root: the {recipe.name} recipe reads its audio from --root")
        return recipe, recipe.prepare(root, audio_root=Path(cfg.audio_root).expanduser().resolve()), root
    return recipe, recipe.prepare(root), root


def hub_recipe(source: str, *, config: str | None = None, label_column: str | None = None,
               audio_column: str = "audio", fold_column: str | None = None,
               clip_seconds: float | None = None) -> tuple["Recipe", list["Item"], str]:
    """A recipe made at run time for any Hugging Face dataset, its items and its source name.

    ``fold_column``: the fold protocol (leave one fold out over that column's integers), rows of every
    split; else the split protocol over the dataset's own splits (train -> support, test -> queries;
    validation/devel/dev -> val). A dataset with neither a fold column named nor a train and a test
    split is refused (no random or stratified split is invented here).
    """
    from icl_audio import hfdata
    from icl_audio.recipes import TEST, TRAIN, VAL, Recipe

    spec = hfdata.parse_hf_spec(source, config=config)
    name = hfdata.describe_source(spec)
    tables = hfdata.open_splits(spec, audio_column=audio_column, all_splits=True)
    items: list = []
    for table in tables:
        items.extend(hfdata.table_items(table, label_column=label_column, fold_column=fold_column))
    if fold_column is not None:
        folds = tuple(sorted({it.fold for it in items if it.fold is not None}))
        if len(folds) < 2:
            raise BenchError(f"{name}: column {fold_column!r} holds {len(folds)} fold(s); the fold protocol needs two or more")
        protocol, splits = "folds", None
    else:
        present = {it.split for it in items}
        if not {TRAIN, TEST} <= present:
            raise BenchError(f"{name}: splits {', '.join(t.split for t in tables)}: the split protocol needs a train and a "
                             "test split; name a fold column (--fold-column) for the fold protocol")
        protocol, folds, splits = "splits", None, tuple(s for s in (TRAIN, VAL, TEST) if s in present)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.source.strip("/")).strip("-.")[-40:] or "dataset"
    recipe = Recipe(
        name=f"hf-{slug}", title=name, prepare=lambda root: list(items), multi_label=any(len(it.labels) > 1 for it in items),
        protocol=protocol, clip_seconds=float(clip_seconds or HF_CLIP_SECONDS), folds=folds, splits=splits,
        layout="a Hugging Face dataset", description=f"{name}: " + (f"folds of column {fold_column!r}" if fold_column
                                                                      else "its own train / test splits"),
    )
    return recipe, items, name
