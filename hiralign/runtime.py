"""Where computations run: the torch device (:func:`resolve_device`) and CPU threads (:func:`thread_limit`).

Every stage parameter ``device`` accepts ``"auto"`` (CUDA when torch sees a GPU, else the CPU),
``"cpu"``, ``"cuda"`` or ``"cuda:N"``; a ``threads`` parameter of 0 leaves the thread count alone.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

from hiralign.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_CUDA = re.compile(r"cuda(?::(\d+))?")


class DeviceError(UserError, ValueError):
    """A device name is unknown, or names a GPU this machine does not have."""


def resolve_device(name: Any = "auto") -> str:
    """The torch device string for ``name``: ``"auto"`` -> ``"cuda"`` when torch sees a GPU, else
    ``"cpu"``; ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` are checked and returned as they are.

    Raises :class:`DeviceError` for an unknown name, or for CUDA on a machine without a GPU (use
    ``"cpu"`` or ``"auto"`` there). ``torch.device(resolve_device(name))`` gives the device object.
    """
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    match = _CUDA.fullmatch(text)
    if match is None:
        raise DeviceError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but torch sees no CUDA GPU; use device 'cpu' or 'auto'")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise DeviceError(f"device {name!r} requested but torch sees {count} CUDA GPU(s) "
                          f"(cuda:0 .. cuda:{count - 1}); use one of those or 'auto'")
    return text


def _faiss():
    try:
        import faiss
    except ImportError:  # faiss is only needed by the warp and some metrics
        return None
    return faiss


@contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """Run torch (and faiss, when installed) on ``threads`` CPU threads inside the block, then
    restore the previous counts; ``threads`` 0 or None leaves everything as it is.

    On a busy shared CPU one thread is often several times faster than two.
    """
    threads = int(threads or 0)
    if threads <= 0:
        yield
        return
    import torch

    faiss = _faiss()
    torch_before = torch.get_num_threads()
    faiss_before = faiss.omp_get_max_threads() if faiss is not None else None
    torch.set_num_threads(threads)
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(torch_before)
        if faiss is not None:
            faiss.omp_set_num_threads(faiss_before)


__all__ = ["DEVICES", "DeviceError", "resolve_device", "thread_limit"]
