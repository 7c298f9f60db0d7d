"""Hyperspectral data: the :class:`Cube` container, dataset loaders, splits and the embedded benchmark."""
from hiralign.data.cube import Cube, CubeError
from hiralign.data.loaders import (
    DatasetError,
    load,
    load_cave,
    load_generic,
    load_hsidwrd,
    load_hsidwrd_pair,
    load_icvl,
    load_kaist,
)
from hiralign.data.splits import get_split, list_datasets

__all__ = [
    "Cube", "CubeError", "DatasetError", "load", "load_cave", "load_generic", "load_hsidwrd",
    "load_hsidwrd_pair", "load_icvl", "load_kaist", "get_split", "list_datasets",
]
