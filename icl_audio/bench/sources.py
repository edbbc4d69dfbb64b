"""Generic bench sources: the user's own labelled data as a run-time Recipe and its items.

``bench`` runs on a :class:`~icl_audio.recipes.Recipe` and its :class:`~icl_audio.recipes.Item` list.
The twelve ARCH datasets are registered recipes read from ``--root``; the user's own data is read by
the same functions as ``support build --folder/--csv`` (:func:`icl_audio.recipes.from_folder`,
:func:`icl_audio.recipes.from_csv`) and wrapped here in a Recipe made at run time:

    the data's own protocol  CSV ``fold`` column -> those folds; else a ``split`` column with "test" ->
                             train / test; else (or with --kfold N) stratified N-fold cross-validation
    stratified k-fold        per class, its clips in hash order (seeded) dealt to folds 1..N in turn,
                             continuing where the previous class stopped, so folds differ in size by
                             at most one clip and each class is spread as evenly as it can be

Any other source (a Hugging Face dataset, say) plugs in the same way: build a Recipe and its items
and call ``run_bench(cfg, recipe=..., items=...)``; everything after that is shared.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from icl_audio.audio import DEFAULT_MAX_SECONDS
from icl_audio.bench.config import DEFAULT_KFOLD, BenchError, source_slug
from icl_audio.recipes import TEST, Item, Recipe, from_csv, from_folder, seeded_order

log = logging.getLogger("icl_audio.bench")


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
    name = f"{kind}-{source_slug(path)}"
    title = f"{path.name} ({kind})"
    multi = any(len(it.labels) > 1 for it in items)
    common = dict(name=name, title=title, prepare=lambda root, _items=tuple(items): list(_items), multi_label=multi,
                  clip_seconds=DEFAULT_MAX_SECONDS, layout="a folder of label sub-folders" if kind == "folder"
                  else "a CSV of path,label[,split][,fold]")
    folds = sorted({it.fold for it in items if it.fold is not None})
    splits = sorted({it.split for it in items if it.split is not None})
    if episodes:
        return Recipe(protocol="folds", folds=None, description=f"{title}: every clip, for episodes.", **common), items
    if kfold is None and folds:
        return Recipe(protocol="folds", folds=tuple(folds), description=f"{title}: the folds of its fold column.",
                      **common), items
    if kfold is None and TEST in splits:
        return Recipe(protocol="splits", folds=None, splits=tuple(splits),
                      description=f"{title}: its split column (support = train, queries = test).", **common), items
    k = kfold or DEFAULT_KFOLD
    labels = {it.labels[0] for it in items}
    if len(items) < k:
        raise BenchError(f"{path}: {len(items)} clips cannot fill {k} folds (lower --kfold)")
    description = (f"{title}: stratified {k}-fold cross-validation (seed {seed}): per class, its clips in a seeded hash "
                   f"order dealt to the folds in turn; {len(labels)} classes, {len(items)} clips.")
    return Recipe(protocol="folds", folds=tuple(range(1, k + 1)), description=description, **common), \
        stratified_folds(items, k, seed)
