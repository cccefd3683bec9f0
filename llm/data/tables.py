"""Rows of a dataset on disk, whatever its format: jsonl, parquet, or a Hugging Face dataset
saved with ``save_to_disk``. Nothing is downloaded.

``read_rows(path, split)`` accepts

* a ``.jsonl`` file, or a folder holding ``{split}.jsonl``;
* a ``.parquet`` file, or a folder of parquet files: those of the split (``{split}.parquet``,
  ``{split}-*.parquet``, ``{split}/*.parquet``, the Hub's ``data/{split}-*.parquet``), or,
  when no file name in the folder names any split, all of them;
* a folder written by ``datasets.Dataset.save_to_disk`` (the rows), or by
  ``datasets.DatasetDict.save_to_disk`` (the rows of ``split``).

Parquet and saved datasets are read through the ``datasets`` library (offline). Rows come in
file order, files in sorted name order, so the same path always gives the same list and the
trainer's data order (a seeded permutation of that list) resumes exactly.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

SPLIT_NAMES = ("train", "validation", "valid", "val", "dev", "test")


def _jsonl_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(row)}")
            rows.append(row)
    return rows


def _names_a_split(file: pathlib.Path, folder: pathlib.Path) -> bool:
    parts = file.relative_to(folder).parts
    stems = [p.split("-")[0].split(".")[0] for p in parts]
    return any(s in SPLIT_NAMES for s in stems)


def parquet_files(folder: pathlib.Path, split: str) -> list[pathlib.Path]:
    """The parquet files of ``split`` in ``folder`` (sorted); all of them when no file names
    a split; an error when files name other splits but not this one."""
    files = sorted(folder.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files in {folder}")
    mine = [
        f
        for f in files
        if f.name == f"{split}.parquet" or f.name.startswith(f"{split}-") or f.parent.name == split
    ]
    if mine:
        return mine
    if any(_names_a_split(f, folder) for f in files):
        raise FileNotFoundError(
            f"{folder} has parquet files of other splits but none of split {split!r} "
            f"(files: {', '.join(str(f.relative_to(folder)) for f in files[:8])})"
        )
    return files


def _saved_dataset_rows(path: pathlib.Path, split: str) -> list[dict[str, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise KeyError(f"{path} has splits {sorted(loaded)}, not {split!r}")
        loaded = loaded[split]
    return loaded.to_list()


def _parquet_rows(files: list[pathlib.Path]) -> list[dict[str, Any]]:
    import datasets

    table = datasets.Dataset.from_parquet([str(f) for f in files], keep_in_memory=True)
    return table.to_list()


def data_format(path: str | pathlib.Path) -> str:
    """ "jsonl", "parquet", "saved" (save_to_disk) or "jsonl-folder" for an existing path."""
    path = pathlib.Path(path)
    if path.is_file():
        if path.suffix == ".parquet":
            return "parquet"
        return "jsonl"
    if not path.is_dir():
        raise FileNotFoundError(f"data path not found: {path}")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "saved"
    if any(path.rglob("*.parquet")):
        return "parquet"
    return "jsonl-folder"


def read_rows(path: str | pathlib.Path, split: str = "train") -> list[dict[str, Any]]:
    """Every row (a dict of columns) of ``split`` at ``path``; see the module docstring."""
    path = pathlib.Path(path)
    kind = data_format(path)
    if kind == "jsonl":
        return _jsonl_rows(path)
    if kind == "jsonl-folder":
        file = path / f"{split}.jsonl"
        if not file.is_file():
            raise FileNotFoundError(
                f"{path} holds no {split}.jsonl, no parquet files and no saved dataset"
            )
        return _jsonl_rows(file)
    if kind == "saved":
        return _saved_dataset_rows(path, split)
    return _parquet_rows([path] if path.is_file() else parquet_files(path, split))
