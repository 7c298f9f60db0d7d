"""Hyperspectral data: the :class:`Cube` container, dataset loaders and the embedded benchmark."""
from hiralign.data.cube import Cube, CubeError

__all__ = ["Cube", "CubeError"]
