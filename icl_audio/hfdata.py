"""Hugging Face datasets as clip sources: a hub id, a ``save_to_disk`` folder or a folder of parquet files.

The ``datasets`` library (the optional extra ``icl-audio[hf]``) loads the data, with its own cache
and offline mode; this package reads each row's audio itself, from the stored bytes or path
(``Audio(decode=False)``), through :func:`icl_audio.audio.load_audio` like any file, so no codec
library is involved and a clip gives the same codes whether it is read from a file or a dataset.

A row becomes an :class:`~icl_audio.recipes.Item` whose audio is a :class:`DatasetRow`: a lazy
reference named ``hf:OWNER/NAME[:CONFIG]@SPLIT#ROW`` (a local folder: its resolved path in place of
OWNER/NAME) that fetches the row's bytes only when the encoding stream reaches it, so items of a
40,000-row dataset hold no audio.

    >>> spec = parse_hf_spec("hf:ashraq/esc50@train")
    >>> items = load_items(spec, label_column="category", fold_column="fold")
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from icl_audio.errors import AudioError, SupportSetError
from icl_audio.recipes.base import TRAIN, AudioRef, HubRow, Item, hub_split, readable

if TYPE_CHECKING:
    from icl_audio.recipes import Recipe

log = logging.getLogger("icl_audio.hfdata")

#: What a ``--support`` spec starts with to name a Hugging Face dataset.
HF_PREFIX = "hf:"
DEFAULT_AUDIO_COLUMN = "audio"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class LabelColumnError(SupportSetError):
    """The label column of a dataset cannot be told (or does not exist); ``source`` names the dataset."""

    def __init__(self, message: str, source: str):
        super().__init__(message)
        self.source = source


@dataclass(frozen=True)
class HubSpec:
    """What ``hf:SOURCE[:CONFIG][@SPLIT]`` names: a hub id or a local folder, a config, a split."""

    source: str
    config: str | None = None
    split: str | None = None


def parse_hf_spec(text: str, *, config: str | None = None, split: str | None = None) -> HubSpec:
    """``hf:OWNER/NAME[:CONFIG][@SPLIT]`` (the ``hf:`` prefix is optional) -> :class:`HubSpec`.

    SOURCE may be a local folder (``hf:/data/esc50@train``, ``hf:./my-set``). ``config`` / ``split``
    (the ``--config`` / ``--split`` options) apply when the text names none; naming one twice is an error.
    """
    body = text[len(HF_PREFIX):] if text.startswith(HF_PREFIX) else text
    found_split = found_config = None
    head, at, tail = body.rpartition("@")
    if at and tail and "/" not in tail:
        body, found_split = head, tail
    head, colon, tail = body.rpartition(":")
    if colon and head and tail and "/" not in tail:
        body, found_config = head, tail
    if not body.strip():
        raise SupportSetError(f"{text!r}: no dataset named (expected hf:OWNER/NAME[:CONFIG][@SPLIT] or hf:/path/to/folder)")
    for word, given, parsed in (("config", config, found_config), ("split", split, found_split)):
        if given is not None and parsed is not None and given != parsed:
            raise SupportSetError(f"{text!r} names {word} {parsed!r} and --{word} says {given!r}: give it once")
    return HubSpec(body, found_config or config, found_split or split)


# ----------------------------------------------------------------------------------------------- rows


#: Rows read through one memory map of a split's Arrow files before they are mapped afresh. The pages of
#: a memory-mapped file that were read stay in this process's resident memory until the file is
#: unmapped, so without this a pass over a dataset would end up holding all of its audio.
REMAP_ROWS = 256


class _AudioColumn:
    """The audio column of one opened split, read one row at a time from its memory-mapped Arrow files,
    which are mapped afresh every REMAP_ROWS rows (so resident memory stays bounded)."""

    def __init__(self, dataset: Any, column: str):
        self._dataset, self._column = dataset, column
        self._files = [f["filename"] for f in dataset.cache_files]
        self._rows: Any = None
        self._reads = 0

    def _view(self) -> Any:
        if self._rows is None or (self._files and self._reads % REMAP_ROWS == 0):
            self._rows = None  # drop the old map before making the new one
            self._rows = self._remapped()
        self._reads += 1
        return self._rows

    def _remapped(self) -> Any:
        datasets = _datasets()
        if self._files:
            parts = [datasets.Dataset.from_file(f) for f in self._files]
            view = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
            if len(view) == len(self._dataset) and self._column in view.features:
                return _audio_undecoded(view.select_columns([self._column]), self._column, "")
            self._files = []  # not the split's rows one to one (a selection): read it as it is
        return self._dataset.select_columns([self._column])  # in memory, or a selection: a view, no copy

    def read(self, row: int, key: str):
        try:
            value = self._view()[row][self._column]
        except Exception as exc:  # noqa: BLE001 - an Arrow or file error of one row skips that row only
            raise AudioError(f"{key}: cannot read the row ({type(exc).__name__}: {exc})") from None
        if not isinstance(value, dict):
            raise AudioError(f"{key}: no audio in this row")
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            return str(value["path"])
        raise AudioError(f"{key}: the row holds neither audio bytes nor a path")


@dataclass(frozen=True)
class DatasetRow(AudioRef):
    """One row of a dataset split: its stable ``key`` and the column it is read from when loaded."""

    key: str
    row: int
    column: _AudioColumn = field(compare=False, repr=False)

    def open_audio(self):
        return self.column.read(self.row, self.key)


@dataclass(frozen=True)
class HubTable:
    """One opened split of a dataset: ``name`` is the reference prefix ``hf:SOURCE[:CONFIG]@SPLIT``."""

    name: str
    split: str
    dataset: Any
    audio_column: str

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.column_names)

    def __len__(self) -> int:
        return len(self.dataset)

    def refs(self) -> list[DatasetRow]:
        """A lazy reference for every row, in row order."""
        reader = _AudioColumn(self.dataset, self.audio_column)
        return [DatasetRow(f"{self.name}#{i}", i, reader) for i in range(len(self.dataset))]

    def values(self, columns: Sequence[str]) -> dict[str, list]:
        """Plain Python values of ``columns`` for every row (ClassLabel integers as their names; lists
        of ClassLabel too). Reads those columns only, never the audio."""
        table = self.dataset.select_columns(list(columns)).with_format("arrow")[:]
        out = {}
        for name in columns:
            values = table.column(name).to_pylist()
            out[name] = _label_names(self.dataset.features[name], values)
        return out

    def audio_paths(self) -> list[str | None]:
        """The file name stored with each row's audio (many hub copies keep the original one)."""
        import pyarrow.compute as pc

        column = self.dataset.select_columns([self.audio_column]).with_format("arrow")[:].column(self.audio_column)
        if not hasattr(column.type, "get_field_index") or column.type.get_field_index("path") < 0:
            return [None] * len(self.dataset)
        return pc.struct_field(column, "path").to_pylist()  # a view of the strings only, not the bytes


def _label_names(feature: Any, values: list) -> list:
    from datasets import ClassLabel

    inner = getattr(feature, "feature", None)
    if isinstance(feature, ClassLabel):
        return [None if v is None or v < 0 else feature.int2str(int(v)) for v in values]
    if isinstance(inner, ClassLabel):
        return [None if v is None else [inner.int2str(int(x)) for x in v if x is not None and x >= 0] for v in values]
    return values


# ----------------------------------------------------------------------------------------------- opening


def _datasets():
    try:
        import datasets
    except ImportError:
        raise SupportSetError(
            "Hugging Face datasets are read with the `datasets` library, which is not installed: "
            "pip install 'icl-audio[hf]'"
        ) from None
    return datasets


def describe_source(spec: HubSpec) -> str:
    """``hf:SOURCE[:CONFIG]``: a hub id as given, a local folder resolved (the prefix of every row key)."""
    path = Path(spec.source).expanduser()
    source = str(path.resolve()) if path.is_dir() else spec.source
    return f"{HF_PREFIX}{source}" + (f":{spec.config}" if spec.config else "")


def open_splits(spec: HubSpec, *, audio_column: str = DEFAULT_AUDIO_COLUMN, all_splits: bool = False,
                splits: Sequence[str] | None = None) -> list[HubTable]:
    """Open the split(s) ``spec`` names, each with a checked audio column read as ``Audio(decode=False)``.

    Which splits: ``spec.split`` if given; else ``splits`` (those of them the dataset has), or every
    split with ``all_splits``; else "train" when there is one, or the dataset's only split.
    Raises :class:`SupportSetError` in one line: no such folder/dataset/config/split, not cached
    offline, an audio column that is missing or not audio, an empty split.
    """
    loaded = _load(spec)
    name = describe_source(spec)
    available = _split_names(loaded)
    if spec.split is not None:
        if spec.split not in available:
            raise SupportSetError(f"{name} has no split {spec.split!r} (splits: {', '.join(available)})")
        chosen = [spec.split]
    elif splits is not None:
        chosen = [s for s in available if s in splits]
        if not chosen:
            raise SupportSetError(f"{name} has none of the splits {', '.join(splits)} (splits: {', '.join(available)})")
    elif all_splits:
        chosen = list(available)
    elif TRAIN in available or len(available) == 1:
        chosen = [TRAIN if TRAIN in available else available[0]]
    else:
        raise SupportSetError(f"{name} has several splits ({', '.join(available)}) and none is 'train': name one, "
                              f"e.g. {name}@{available[0]}")
    tables = []
    for split in chosen:
        dataset = loaded[split] if _is_dict(loaded) else loaded
        if len(dataset) == 0:
            raise SupportSetError(f"{name}@{split} has no rows (an empty split)")
        dataset = _audio_undecoded(dataset, audio_column, f"{name}@{split}")
        tables.append(HubTable(f"{name}@{split}", split, dataset, audio_column))
    return tables


def _is_dict(loaded: Any) -> bool:
    return isinstance(loaded, _datasets().DatasetDict)


def _split_names(loaded: Any) -> list[str]:
    if _is_dict(loaded):
        return list(loaded.keys())
    return [str(loaded.split) if loaded.split is not None else TRAIN]


def _audio_undecoded(dataset: Any, column: str, where: str) -> Any:
    datasets = _datasets()
    features = dataset.features
    if column not in features:
        raise SupportSetError(f"{where}: no column {column!r} (columns: {', '.join(features)}); "
                              "name the audio column (--audio-column)")
    feature = features[column]
    if isinstance(feature, datasets.Audio):
        # Only the feature changes (no data is rewritten): rows now give {"bytes", "path"}, not decoded arrays.
        return dataset.cast_column(column, datasets.Audio(decode=False))
    if isinstance(feature, dict) and {"bytes", "path"} <= set(feature):
        return dataset  # the Audio storage layout without the feature (a parquet file written by another tool)
    audio = [n for n, f in features.items() if isinstance(f, datasets.Audio)]
    raise SupportSetError(f"{where}: column {column!r} is not audio (it holds {feature}); "
                          f"audio columns: {', '.join(audio) or 'none'}")


def _load(spec: HubSpec) -> Any:
    datasets = _datasets()
    path = Path(spec.source).expanduser()
    if path.is_dir():
        return _load_folder(datasets, path, spec.config)
    if path.exists() or not _HUB_ID.match(spec.source):
        raise SupportSetError(f"{spec.source}: not a dataset folder nor a Hugging Face hub id (OWNER/NAME)")
    try:
        return datasets.load_dataset(spec.source, spec.config)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; each becomes one line below
        raise SupportSetError(_load_error(spec, exc)) from None


def _load_folder(datasets: Any, path: Path, config: str | None) -> Any:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        if config:
            raise SupportSetError(f"{path}: a save_to_disk folder has no configs (got config {config!r})")
        try:
            return datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001
            raise SupportSetError(f"{path}: cannot load the save_to_disk folder ({_first_line(exc)})") from None
    data_dir = path / config if config else path
    if not data_dir.is_dir() or not any(data_dir.rglob("*.parquet")):
        if config and any(path.rglob("*.parquet")):
            configs = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.rglob("*.parquet")))
            raise SupportSetError(f"{path} has no config {config!r} (configs: {', '.join(configs) or 'none'})")
        raise SupportSetError(f"{path}: neither a save_to_disk folder (dataset_dict.json or state.json) "
                              "nor a folder of parquet files")
    try:
        # Splits from file or folder names (train-00000-of-00001.parquet, test/0000.parquet), as on the hub.
        return datasets.load_dataset("parquet", data_dir=str(data_dir))
    except Exception as exc:  # noqa: BLE001
        raise SupportSetError(f"{data_dir}: cannot load the parquet files ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _load_error(spec: HubSpec, exc: BaseException) -> str:
    text = _first_line(exc)
    name = spec.source + (f" (config {spec.config})" if spec.config else "")
    fetch = f"datasets.load_dataset({spec.source!r}" + (f", {spec.config!r}" if spec.config else "") + ")"
    if "scripts are no longer supported" in text:
        return (f"{spec.source} is a loading-script dataset, which datasets 4+ no longer runs; its parquet export "
                f"loads without it: download the revision refs/convert/parquet of the dataset repo into a folder "
                f"and name that folder (hf:/path/to/folder, with :CONFIG for its config sub-folder)")
    if "BuilderConfig" in text or "for config" in text or "Unknown config" in text:
        return f"{spec.source} has no config {spec.config!r} ({text})"
    from datasets import config as dconfig

    if isinstance(exc, ConnectionError) or dconfig.HF_HUB_OFFLINE:
        return (f"dataset {name} is not in the datasets cache ({dconfig.HF_DATASETS_CACHE}) and the Hub cannot be "
                f"reached (offline); fetch it once online with: python -c \"import datasets; {fetch}\"")
    if type(exc).__name__ == "DatasetNotFoundError":
        return f"{text} (a gated or private dataset needs `hf auth login` first)"
    return f"cannot load dataset {name}: {text}"


# ----------------------------------------------------------------------------------------------- items


def find_label_column(table: HubTable, given: str | None = None) -> str:
    """The label column: ``given`` if it exists, else the dataset's only ClassLabel column, else one named
    "label". Raises :class:`LabelColumnError` listing the columns otherwise."""
    from datasets import ClassLabel

    features = table.dataset.features
    columns = [c for c in features if c != table.audio_column]
    if given is not None:
        if given not in features:
            raise LabelColumnError(f"{table.name}: no column {given!r} (columns: {', '.join(features)})", table.name)
        return given
    class_labels = [c for c in columns if isinstance(features[c], ClassLabel)
                    or isinstance(getattr(features[c], "feature", None), ClassLabel)]
    if len(class_labels) == 1:
        return class_labels[0]
    if "label" in columns:
        return "label"
    why = f"{len(class_labels)} ClassLabel columns ({', '.join(class_labels)})" if class_labels else "no ClassLabel column"
    raise LabelColumnError(f"{table.name}: cannot tell the label column: {why} and none named 'label' "
                           f"(columns: {', '.join(columns)})", table.name)


def _labels_of(value: Any) -> tuple[str, ...]:
    """A cell of the label column -> its labels: a list is several (multi-label), None or "" none."""
    values = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for v in values:
        text = str(v).strip() if v is not None else ""
        if text and text not in out:
            out.append(text)
    return tuple(out)


def _fold_of(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise SupportSetError(f"{where}: fold must be an integer, got {value!r}") from None


def table_items(table: HubTable, *, label_column: str | None = None, fold_column: str | None = None) -> list[Item]:
    """The rows of one opened split as Items: labels from the label column (ClassLabel names, list cells
    multi-label, ``_`` shown as spaces as in the recipes, the dataset's values kept in ``original_labels``),
    ``split`` the canonical split name, ``fold`` from ``fold_column``. Rows without a label are skipped
    (logged); a column with no label at all is an error."""
    label_column = find_label_column(table, label_column)
    columns = [label_column]
    if fold_column is not None:
        if fold_column not in table.dataset.features:
            raise SupportSetError(f"{table.name}: no column {fold_column!r} (columns: {', '.join(table.columns)})")
        columns.append(fold_column)
    values = table.values(columns)
    split = hub_split(table.split)
    items: list[Item] = []
    unlabelled = 0
    for i, ref in enumerate(table.refs()):
        codes = _labels_of(values[label_column][i])
        if not codes:
            unlabelled += 1
            continue
        fold = _fold_of(values[fold_column][i], f"{ref.key} column {fold_column!r}") if fold_column else None
        items.append(Item(path=None, ref=ref, labels=tuple(readable(c) for c in codes), original_labels=codes,
                          split=split, fold=fold))
    if not items:
        raise SupportSetError(f"{table.name}: column {label_column!r} holds no labels in any of its {len(table)} rows")
    if unlabelled:
        log.warning("%s: skipped %d row(s) without a label in column %r", table.name, unlabelled, label_column)
    return items


def load_items(spec: HubSpec, *, label_column: str | None = None, audio_column: str = DEFAULT_AUDIO_COLUMN,
               fold_column: str | None = None, all_splits: bool = False) -> list[Item]:
    """Items of the dataset ``spec`` names (see :func:`open_splits`, :func:`table_items`); no audio is read."""
    items: list[Item] = []
    for table in open_splits(spec, audio_column=audio_column, all_splits=all_splits):
        items.extend(table_items(table, label_column=label_column, fold_column=fold_column))
    return items


def hub_rows(tables: Iterable[HubTable], columns: Sequence[str] = (), optional: Sequence[str] = ()) -> list[HubRow]:
    """Every row of ``tables`` as a :class:`HubRow` for a recipe's mapping: its lazy audio, hub split,
    the file name stored with its audio, and ``columns`` (all non-audio columns when empty) plus those of
    ``optional`` the table has."""
    rows: list[HubRow] = []
    for table in tables:
        wanted = list(columns) or [c for c in table.columns if c != table.audio_column]
        missing = [c for c in wanted if c not in table.dataset.features]
        if missing:
            raise SupportSetError(f"{table.name}: no column {', '.join(map(repr, missing))} "
                                  f"(columns: {', '.join(table.columns)})")
        wanted += [c for c in optional if c in table.dataset.features and c not in wanted]
        values = table.values(wanted)
        paths = table.audio_paths()
        for i, ref in enumerate(table.refs()):
            rows.append(HubRow(ref=ref, split=table.split, values={c: values[c][i] for c in wanted},
                               audio_path=paths[i]))
    return rows


def recipe_items(recipe: "Recipe", spec: HubSpec, *, audio_column: str = DEFAULT_AUDIO_COLUMN) -> list[Item]:
    """The items of ``recipe`` read from its hub copy (or a local copy with the same columns): the rows
    of the copy's splits mapped by the recipe to its labels, folds and splits."""
    hub = recipe.hub
    if hub is None:
        raise SupportSetError(f"dataset {recipe.name!r} has no known hub copy; read it from its folder (--root)")
    if spec.config is None and hub.config is not None:
        spec = HubSpec(spec.source, hub.config, spec.split)
    tables = open_splits(spec, audio_column=audio_column, splits=None if spec.split else hub.splits,
                         all_splits=spec.split is None and hub.splits is None)
    try:
        return hub.map_rows(hub_rows(tables, hub.columns, hub.optional))
    except SupportSetError as exc:
        raise SupportSetError(f"{recipe.title or recipe.name} from {describe_source(spec)}: {exc}") from None

