"""Where a bench reads its clips: a Recipe and its Items, whatever the source.

``bench`` runs on a :class:`~icl_audio.recipes.Recipe` and its :class:`~icl_audio.recipes.Item` list
(:func:`resolve_source`):

    registered dataset   its recipe reads ``--root`` (its official layout; ``--audio-root`` where the
                         recipe takes a second folder) or its hub copy (``--hf``)
    the user's own data  ``bench folder`` / ``bench csv``: read as ``support build --folder/--csv``
                         reads them, wrapped in a Recipe made at run time (:func:`own_data`)
    any hub dataset      ``bench hf``: a Recipe made at run time over its fold column or its own splits
                         (:func:`hub_recipe`)

Own data's protocol: a CSV ``fold`` column -> those folds; else a ``split`` column with "test" ->
train / test; else (or with --kfold N) stratified N-fold cross-validation: per class, its clips in
hash order (seeded) dealt to folds 1..N in turn, continuing where the previous class stopped, so
folds differ in size by at most one clip and each class is spread as evenly as it can be.

Any other source plugs in the same way: build a Recipe and its items and call
``run_bench(cfg, recipe=..., items=..., source=NAME)``; everything after that is shared.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from icl_audio.audio import DEFAULT_MAX_SECONDS
from icl_audio.bench.config import DEFAULT_KFOLD, BenchError, source_slug
from icl_audio.recipes import TEST, TRAIN, VAL, Item, Recipe, from_csv, from_folder, seeded_order

if TYPE_CHECKING:
    from icl_audio.bench.config import BenchConfig

log = logging.getLogger("icl_audio.bench")

#: Clip length of `bench hf` when --clip-seconds is not given: 5 s is 250 codec tokens, so a prompt of
#: 8 demonstrations and the query stays within Llasa's 2,048-token context (ARCH's length for most sets).
HF_CLIP_SECONDS = 5.0


def resolve_source(cfg: "BenchConfig", recipe: "Recipe | None" = None, items: "Sequence[Item] | None" = None,
                   source: str | None = None) -> tuple[Recipe, list[Item], "Path | str"]:
    """The recipe, items and root a bench runs on; ``root`` names the source in support-set names and
    results (a resolved folder, or e.g. ``hf:SOURCE[:CONFIG]``).

    ``recipe`` given (a source built by the caller): used as it is, with ``items`` (default
    ``recipe.prepare(root)``) and ``source`` (default ``cfg.root``, unresolved: it may name a dataset
    rather than a folder) as its root. Otherwise ``cfg.source`` ("folder" / "csv": the user's own
    data, :func:`own_data`) or the registered recipe ``cfg.dataset`` (:func:`dataset_items`).
    """
    if recipe is not None:
        root = source if source is not None else str(cfg.root)
        return recipe, list(items) if items is not None else recipe.prepare(Path(root)), root
    if cfg.source is not None:
        root = Path(cfg.root).expanduser().resolve()
        recipe, items = own_data(cfg.source, root, kfold=cfg.kfold, seed=cfg.seed, episodes=cfg.is_episodes)
        return recipe, items, root
    return dataset_items(cfg)


def dataset_items(cfg: "BenchConfig") -> tuple[Recipe, list[Item], "Path | str"]:
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
               audio_column: str = "audio", fold_column: str | None = None, clip_seconds: float | None = None,
               kfold: int | None = None, seed: int = 0, episodes: bool = False) -> tuple[Recipe, list[Item], str]:
    """A recipe made at run time for any Hugging Face dataset, its items (rows of every split) and its
    source name, with the protocol :func:`data_protocol` chooses: ``fold_column`` gives the fold
    protocol (leave one fold out over that column's integers); else the dataset's own train and test
    splits give the split protocol (validation/devel/dev -> val); else, or with ``kfold``, stratified
    k-fold cross-validation, as for the user's own data; ``episodes``: every row, for episodes.
    """
    from icl_audio import hfdata

    spec = hfdata.parse_hf_spec(source, config=config)
    name = hfdata.describe_source(spec)
    tables = hfdata.open_splits(spec, audio_column=audio_column, all_splits=True)
    items: list = []
    for table in tables:
        items.extend(hfdata.table_items(table, label_column=label_column, fold_column=fold_column))
    if fold_column is not None:
        folds = {it.fold for it in items if it.fold is not None}
        if len(folds) < 2:
            raise BenchError(f"{name}: column {fold_column!r} holds {len(folds)} fold(s); the fold protocol needs two or more")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.source.strip("/")).strip("-.")[-40:] or "dataset"
    recipe, items = data_protocol(items, name=f"hf-{slug}", title=name, layout="a Hugging Face dataset",
                                  clip_seconds=float(clip_seconds or HF_CLIP_SECONDS), kfold=kfold, seed=seed,
                                  episodes=episodes, own_folds=f"the folds of column {fold_column!r}")
    return recipe, items, name


def stratified_folds(items: Sequence[Item], k: int, seed: int) -> list[Item]:
    """``items`` with ``fold`` set to 1..k, stratified by (first) label; order kept. Pure.

    Per class (sorted), its clips in hash order (:func:`~icl_audio.recipes.seeded_order`, ``seed``)
    are dealt to the folds in turn, starting after the fold the previous class ended on.
    """
    by_label: dict[str, list[str]] = {}
    for it in items:
        by_label.setdefault(it.labels[0], []).append(it.key)
    fold_of: dict[str, int] = {}
    position = 0
    for label in sorted(by_label):
        for key in seeded_order(by_label[label], seed):
            fold_of[key] = position % k + 1
            position += 1
    small = sorted(label for label, keys in by_label.items() if len(keys) < k)
    if small:
        log.warning("%d classes have fewer clips than --kfold %d: some folds have none of them (e.g. %s)",
                    len(small), k, small[0])
    return [dataclasses.replace(it, fold=fold_of[it.key]) for it in items]


def own_data(kind: str, path: Path, *, kfold: int | None = None, seed: int = 0,
             episodes: bool = False) -> tuple[Recipe, list[Item]]:
    """The run-time Recipe and items of the user's own data: ``kind`` "folder" (``path/<label>/<clip>``)
    or "csv" (``path,label[,split][,fold]``), read as ``support build`` reads them.

    ``kfold``: stratified k-fold cross-validation (seeded by ``seed``) even when the data defines
    folds or splits; None: the data's own folds, else its train/test split, else 5 folds.
    ``episodes``: the items only feed episodes (no folds are needed). Raises SupportSetError /
    BenchError (one line) for data that cannot be read.
    """
    path = Path(path).expanduser()
    items = from_folder(path) if kind == "folder" else from_csv(path)
    return data_protocol(items, name=f"{kind}-{source_slug(path)}", title=f"{path.name} ({kind})",
                         layout="a folder of label sub-folders" if kind == "folder" else "a CSV of path,label[,split][,fold]",
                         clip_seconds=DEFAULT_MAX_SECONDS, kfold=kfold, seed=seed, episodes=episodes,
                         own_folds="the folds of its fold column")


def data_protocol(items: Sequence[Item], *, name: str, title: str, layout: str, clip_seconds: float,
                  kfold: int | None, seed: int, episodes: bool, own_folds: str) -> tuple[Recipe, list[Item]]:
    """The run-time Recipe of labelled data that is not a registered dataset, and its items (with folds
    when cross-validated). ``episodes``: every clip, no units. Else ``kfold`` None: the items' own folds
    (``own_folds`` says where they come from), else their train/test split, else 5 stratified folds;
    ``kfold`` N: N stratified folds (seeded by ``seed``) whatever the items define."""
    items = list(items)
    common = dict(name=name, title=title, prepare=lambda root, _items=tuple(items): list(_items),
                  multi_label=any(len(it.labels) > 1 for it in items), clip_seconds=clip_seconds, layout=layout)
    folds = sorted({it.fold for it in items if it.fold is not None})
    splits = [s for s in (TRAIN, VAL, TEST) if any(it.split == s for it in items)]
    if episodes:
        return Recipe(protocol="folds", folds=None, description=f"{title}: every clip, for episodes.", **common), items
    if kfold is None and folds:
        return Recipe(protocol="folds", folds=tuple(folds), description=f"{title}: {own_folds}.", **common), items
    if kfold is None and TRAIN in splits and TEST in splits:
        return Recipe(protocol="splits", folds=None, splits=tuple(splits),
                      description=f"{title}: its own splits (support = train, queries = test).", **common), items
    k = kfold or DEFAULT_KFOLD
    labels = {it.labels[0] for it in items}
    if len(items) < k:
        raise BenchError(f"{title}: {len(items)} clips cannot fill {k} folds (lower --kfold)")
    description = (f"{title}: stratified {k}-fold cross-validation (seed {seed}): per class, its clips in a seeded hash "
                   f"order dealt to the folds in turn; {len(labels)} classes, {len(items)} clips.")
    return Recipe(protocol="folds", folds=tuple(range(1, k + 1)), description=description, **common), \
        stratified_folds(items, k, seed)
