"""Train/test scene lists of the real datasets, read from ``hiralign/data/splits/<dataset>_<split>.txt``.

Each file names one scene per line (as in :func:`hiralign.data.loaders.scene_path`); lines starting
with ``#`` are comments that say where the list comes from and how certain it is.
"""
from __future__ import annotations

from pathlib import Path

SPLIT_DIR = Path(__file__).resolve().parent / "splits"


def _split_files() -> dict[tuple[str, str], Path]:
    files = {}
    for file in sorted(SPLIT_DIR.glob("*_*.txt")):
        dataset, split = file.stem.split("_", 1)
        files[(dataset, split)] = file
    return files


def list_datasets() -> list[str]:
    """Datasets that have split files, e.g. ``["cave", "hsidwrd", "icvl", "kaist"]``."""
    return sorted({dataset for dataset, _ in _split_files()})


def list_splits(dataset: str) -> list[str]:
    """Split names available for ``dataset``, e.g. ``["all", "test", "train"]``."""
    splits = sorted(split for d, split in _split_files() if d == dataset.lower())
    if not splits:
        raise ValueError(f"no split files for dataset {dataset!r}; datasets with splits: {list_datasets()}")
    return splits


def split_source(dataset: str, split: str) -> str:
    """The header comment of a split file: where the list comes from and how certain it is."""
    return "\n".join(line[1:].strip() for line in _split_lines(dataset, split) if line.startswith("#"))


def _split_lines(dataset: str, split: str) -> list[str]:
    file = _split_files().get((dataset.lower(), split.lower()))
    if file is None:
        raise ValueError(f"no split {split!r} for dataset {dataset!r}; available: "
                         f"{ {d: list_splits(d) for d in list_datasets()} }")
    return [line.strip() for line in file.read_text().splitlines()]


def get_split(dataset: str, split: str) -> list[str]:
    """Scene names of ``split`` (``"train"``, ``"test"``, ...) of ``dataset``, in file order."""
    names = [line for line in _split_lines(dataset, split) if line and not line.startswith("#")]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"split {dataset}_{split} lists scenes twice: {duplicates}")
    return names
