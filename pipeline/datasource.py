"""A user's own data, from anything `datasets` reads offline, or from the project's plain text formats.

`read_rows` (and `read_texts`, one column of it) reads every source a config or a command line names:

    a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`   (datasets.load_from_disk)
    a .json, .jsonl, .csv or .parquet file, or a folder of such files          (datasets.load_dataset)
    a dataset name already in the local Hugging Face cache, e.g. owner/name    (load_dataset, offline)
    a .txt file: one text per non-empty line, column `text`
    a .yaml/.yml file: a mapping with one list of strings (like `prompts:` in data/eval/*.yaml),
                       column named by its key, or `text`

`datasets` is imported inside the functions: the command line starts without it. It never reaches
the network from here: a hub name that is not in the cache fails at once, with a ConfigError.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.config import ConfigError, read_yaml
from pipeline.files import read_lines

DATASET_FILES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
PLAIN_FILES = (".txt", ".yaml", ".yml")
DEFAULT_SPLIT = "train"


def read_rows(source: str | Path, columns: dict[str, str], what: str, split: str | None = None) -> list[dict]:
    """The rows of `source`, each {our name: value} for every `our name -> column path` in `columns`.

    A column path may be dotted to reach into a struct column (`prompt.text`). Raises a one-line
    ConfigError starting with `what` for a missing or unreadable source, an unknown column or split,
    and a source without rows.
    """
    table = _table(source, set(columns.values()), what, split)
    if not table or not len(next(iter(table.values()))):
        raise ConfigError(f"{what}: {source} has no rows")
    picked = [table[path] for path in columns.values()]
    return [dict(zip(columns, values)) for values in zip(*picked)]


def read_texts(
    source: str | Path, column: str = "text", what: str = "texts", split: str | None = None
) -> list[str]:
    """The non-empty texts of one column of `source`, stripped; a value that is no string is an error."""
    texts = []
    for number, row in enumerate(read_rows(source, {"text": column}, what, split), start=1):
        value = row["text"]
        if not isinstance(value, str):
            raise ConfigError(
                f"{what}: row {number} of {source}: column {column!r} holds {type(value).__name__} "
                f"{_short(value)}, not a text"
            )
        if value.strip():
            texts.append(value.strip())
    if not texts:
        raise ConfigError(f"{what}: {source} has no non-empty text in column {column!r}")
    return texts


@contextmanager
def quiet_datasets() -> Iterator:
    """`datasets`, offline, without its progress bars and log lines, for the length of the block.

    Offline is `datasets`' own switch (HF_DATASETS_OFFLINE), set on its config rather than in the
    environment: the environment is read once, when `datasets` is first imported, and a hub model
    loaded by transformers in the same process must not go offline with it.
    """
    import datasets

    offline, verbosity = datasets.config.HF_HUB_OFFLINE, datasets.logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    datasets.config.HF_HUB_OFFLINE = True
    # Errors too: a corrupt file is logged at ERROR before it is raised, and is reported by us.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def _table(source: str | Path, paths: set[str], what: str, split: str | None) -> dict[str, list]:
    """The columns `paths` of `source` as {path: values}."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix in PLAIN_FILES:
        if split is not None:
            raise ConfigError(
                f"{what}: {source} is a {path.suffix} file, which has no splits (split: {split!r})"
            )
        table = {"text": read_lines(path, what)} if path.suffix == ".txt" else _yaml_table(path, what)
        _check_columns(paths, list(table), what, source)
        return table
    if path.is_file() and path.suffix not in DATASET_FILES:
        known = ", ".join([*DATASET_FILES, *PLAIN_FILES])
        raise ConfigError(f"{what}: {source} is not a file type this reads ({known})")
    if not path.exists() and _looks_like_path(str(source)):
        raise ConfigError(f"{what}: {source} does not exist")
    # A user's file is read once for a run: its Arrow copy goes to a scratch cache, not into
    # ~/.cache, and lives until the rows are out of it.
    with tempfile.TemporaryDirectory(prefix="rr-datasets-") as scratch, quiet_datasets() as datasets:
        try:
            dataset = _one_split(_load(datasets, path, str(source), what, scratch), split, what, source)
            flat = dataset.flatten()  # struct columns become dotted ones: prompt.text
            _check_columns(paths, flat.column_names, what, source)
            return flat.select_columns(sorted(paths)).to_dict()
        except ConfigError:
            raise
        except StopIteration:  # how `datasets` meets a data file with nothing in it
            raise ConfigError(f"{what}: {source} has no rows") from None
        except (datasets.exceptions.DatasetsError, OSError, ValueError, KeyError) as exc:
            if "corresponds to no data" in str(exc):  # `datasets`' words for a split without rows
                raise ConfigError(f"{what}: {source} has no rows") from None
            raise ConfigError(f"{what}: cannot read {source}: {_reason(exc)}") from None


def _load(datasets, path: Path, source: str, what: str, scratch: str):
    """A Dataset or DatasetDict from a saved folder, a data file or folder, or the hub cache."""
    if path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json")):
        try:
            return datasets.load_from_disk(str(path))
        except IndexError:  # how `datasets` 5.2 meets a dataset saved without rows (in no shards)
            raise ConfigError(f"{what}: {source} has no rows") from None
    if path.is_file():
        return datasets.load_dataset(DATASET_FILES[path.suffix], data_files=str(path), cache_dir=scratch)
    if path.is_dir():
        return datasets.load_dataset(str(path), cache_dir=scratch)
    try:
        return datasets.load_dataset(source)
    except ConnectionError:
        # Offline, `datasets` says it could not reach the hub when the name is not in its cache.
        raise ConfigError(
            f"{what}: {source} is neither a file or folder nor a dataset in the local Hugging Face cache "
            f"({datasets.config.HF_DATASETS_CACHE}); nothing is downloaded"
        ) from None


def _one_split(data, split: str | None, what: str, source):
    """`split` of a DatasetDict (default `train`, else its only split); a Dataset as it is."""
    if not hasattr(data, "keys"):
        if split is not None:
            raise ConfigError(f"{what}: {source} is one dataset without splits (split: {split!r})")
        return data
    splits = list(data.keys())
    if split is None and len(splits) == 1:
        split = splits[0]
    split = split or DEFAULT_SPLIT
    if split not in splits:
        raise ConfigError(
            f"{what}: {source} has no split {split!r}; name one of its splits: {', '.join(splits)}"
        )
    return data[split]


def _yaml_table(path: Path, what: str) -> dict[str, list]:
    """A YAML mapping's lists as columns; its only list also answers to `text`."""
    data = read_yaml(path, what)
    lists = (
        {key: value for key, value in data.items() if isinstance(value, list)}
        if isinstance(data, dict)
        else {}
    )
    if not lists:
        raise ConfigError(f"{what}: {path} is not a YAML mapping with a list of texts (like `prompts:`)")
    if len(lists) == 1 and "text" not in lists:
        lists["text"] = next(iter(lists.values()))
    return lists


def _check_columns(paths: set[str], available: list[str], what: str, source) -> None:
    for path in sorted(paths):
        if path not in available:
            raise ConfigError(f"{what}: {source} has no column {path!r}; its columns: {', '.join(available)}")


def _looks_like_path(source: str) -> bool:
    """What cannot be a hub name (`name` or `owner/name`) is a path that does not exist."""
    return (
        source.startswith(("/", ".", "~"))
        or source.count("/") > 1
        or Path(source).suffix in (*DATASET_FILES, *PLAIN_FILES)
    )


def _reason(exc: BaseException) -> str:
    """What went wrong, on one line; `datasets` wraps a parser's error in a vaguer one."""
    cause = exc.__cause__ or exc
    return " ".join(str(cause).split())[:300] or type(cause).__name__


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
