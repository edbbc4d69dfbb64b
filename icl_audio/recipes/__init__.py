"""Dataset recipes: the registry of benchmark datasets (ARCH's twelve, five more) and the generic folder / CSV sources.

Every recipe is a pure function ``prepare(root) -> list[Item]`` over the dataset's official
on-disk layout (lhotse style); :class:`Recipe` adds what the benchmark needs to evaluate it the
ARCH way (clip length, folds or splits, :meth:`Recipe.split_items`) and, in ``Recipe.hub``, how the
rows of its Hugging Face hub copy map to the same items. Import-light: stdlib only.

    >>> recipe = get_recipe("esc50")
    >>> items = recipe.prepare(Path("~/data/ESC-50-master"))
    >>> for unit in recipe.evaluation_units(items):          # 1..5
    ...     support, queries = recipe.split_items(items, unit)
"""

from __future__ import annotations

import re

from icl_audio.errors import SupportSetError
from icl_audio.recipes import (
    arca23k_fsd, audiomnist, crema_d, emovo, esc50, flusense, fma_small, fsd50k, gtzan, irmas, medley_solos_db, mtt,
    ravdess, slurp, timit, us8k, vivae,
)
from icl_audio.recipes.base import (
    AUDIO_EXTENSIONS, TEST, TRAIN, VAL, AudioRef, HubCopy, HubRow, Item, Recipe, Segment, random_split, readable,
    seeded_order,
)
from icl_audio.recipes.generic import LABEL_SEPARATOR, from_csv, from_folder

__all__ = [
    "ARCH_DATASETS", "AUDIO_EXTENSIONS", "LABEL_SEPARATOR", "RECIPES", "TEST", "TRAIN", "VAL", "AudioRef", "HubCopy",
    "HubRow", "Item", "Recipe", "Segment",
    "from_csv", "from_folder", "get_recipe", "random_split", "readable", "seeded_order",
]

#: Registry name -> recipe: ARCH's twelve in the order of its tables, then the five more the prototype
#: this project grew from evaluates (CREMA-D, GTZAN, TIMIT dialect regions, ARCA23K-FSD, FluSense).
RECIPES: dict[str, Recipe] = {
    m.RECIPE.name: m.RECIPE
    for m in (esc50, us8k, fsd50k, vivae, fma_small, mtt, irmas, medley_solos_db, ravdess, audiomnist, slurp, emovo,
              crema_d, gtzan, timit, arca23k_fsd, flusense)
}
#: The twelve datasets of the ARCH benchmark (the others have no published ARCH numbers).
ARCH_DATASETS: tuple[str, ...] = tuple(RECIPES)[:12]


def _key(name: str) -> str:
    # "ESC-50", "esc_50", "FMA small", "medley_solos_db" all find their recipe.
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


_ALIASES: dict[str, str] = {_key(n): n for n in RECIPES} | {
    _key("urbansound8k"): "us8k",
    _key("medleysolosdb"): "medley-solos-db",
    _key("fma"): "fma-small",
    _key("audio-mnist"): "audiomnist",
    _key("magnatagatune"): "mtt",
    _key("cremad"): "crema-d",
    _key("gtzan-genre"): "gtzan",
    _key("timit-dialect"): "timit",
    _key("arca23k"): "arca23k-fsd",
}


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name`` (case, '-', '_' and spaces ignored: "ESC-50" works).

    Raises SupportSetError listing the known names for an unknown one.
    """
    found = _ALIASES.get(_key(str(name)))
    if found is None:
        raise SupportSetError(f"unknown dataset {name!r} (known: {', '.join(RECIPES)})")
    return RECIPES[found]
