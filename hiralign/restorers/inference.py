"""Applying a restorer to whole cubes: untiled, or tiled with overlap so any size runs in bounded memory.

Tiling (``blend="crop"``, the default) is *crop-and-stitch*: the image is covered by tiles of at
most ``tile`` pixels that overlap by ``2 * overlap``; from every tile only the part at least
``overlap`` pixels away from its interior edges is kept, and the kept parts partition the image.
For a local model (receptive radius ``r``, translation-equivariant for shifts that are multiples of
``tile_align``) every kept output pixel then sees exactly the input it would see in the full image
as long as ``overlap >= r``: tiled == untiled up to float rounding. ``blend="window"`` instead
averages overlapping tiles with linear ramps of width ``overlap`` -- smoother for global models
(attention over the whole input), for which no tiling is exact.

Super-resolution models are tiled on the low-resolution input; the output spans scale with them,
and so do the crops of an extra input given at a multiple of the input size (the HR reference of
``sr-ref``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

#: Margin used when a model does not declare ``receptive_radius`` (global or foreign models).
DEFAULT_OVERLAP = 16


def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    """1-D tiling: ``(start, stop, keep_start, keep_stop)`` for each tile.

    Tiles start at multiples of ``align``; the last one may stretch to the end (by less than
    ``align``). The keep ranges partition ``[0, length)`` and lie at least ``overlap`` from every
    tile edge that is not an image edge.
    """
    if tile < 1 or overlap < 0 or align < 1:
        raise ValueError(f"need tile >= 1, overlap >= 0, align >= 1; got tile={tile}, overlap={overlap}, align={align}")
    if length <= tile:
        return [(0, length, 0, length)]
    step = (tile - 2 * overlap) // align * align
    if step <= 0:
        raise ValueError(
            f"tile {tile} is too small for overlap {overlap} (and alignment {align}): "
            f"need tile >= 2 * overlap + {align}"
        )
    starts = list(range(0, length - tile, step))
    last = (length - tile) // align * align
    if last > starts[-1]:
        starts.append(last)
    spans, keep_start = [], 0
    for i, start in enumerate(starts):
        final = i == len(starts) - 1
        stop = length if final else start + tile
        keep_stop = length if final else stop - overlap
        spans.append((start, stop, keep_start, keep_stop))
        keep_start = keep_stop
    return spans


def ramp_weights(start: int, stop: int, length: int, overlap: int) -> torch.Tensor:
    """Blend weights of a tile ``[start, stop)``: linear ramps of ``overlap`` pixels at edges that
    are interior to the image, 1 elsewhere (always > 0)."""
    t = torch.arange(start, stop, dtype=torch.float64) + 0.5
    w = torch.ones(stop - start, dtype=torch.float64)
    if overlap > 0 and start > 0:
        w = torch.minimum(w, (t - start) / overlap)
    if overlap > 0 and stop < length:
        w = torch.minimum(w, (stop - t) / overlap)
    return w


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode without gradients, restoring its training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def output_scale(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Integer upscaling factor from an input/output pair (1 for same-size restorers)."""
    scale = y.shape[-1] // x.shape[-1]
    if y.shape[-2:] != (x.shape[-2] * scale, x.shape[-1] * scale) or y.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"{type(model).__name__} returned shape {tuple(y.shape)} for input {tuple(x.shape)}; a restorer "
            "must return (N, B, H, W) with H, W equal to the input's or an integer multiple of them"
        )
    return scale


def crop_extra(name: str, v: torch.Tensor, size: tuple[int, int], r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    """The tile ``[r0, r1) x [c0, c1)`` of the input (``size`` = its h, w) cut from extra input ``v``,
    which is the input's size (a mask) or an integer multiple ``f`` of it (a reference: rows
    ``f r0 .. f r1``)."""
    h, w = size
    f = v.shape[-2] // h
    if f < 1 or v.shape[-2:] != (h * f, w * f):
        raise ValueError(f"extra input {name!r} of spatial size {tuple(v.shape[-2:])} is not an integer multiple of the input's {size}")
    return v[..., r0 * f : r1 * f, c0 * f : c1 * f]


def restore_batch(model: nn.Module, x: torch.Tensor, extra: dict[str, torch.Tensor] | None = None,
                  tile: int | None = None, overlap: int | None = None, blend: str = "crop") -> torch.Tensor:
    """``model(x, **extra)`` for an ``(N, B, h, w)`` batch, tiled when ``tile`` is set and the input
    is larger; ``overlap`` defaults to the model's ``receptive_radius`` (else ``DEFAULT_OVERLAP``)."""
    extra = extra or {}
    if blend not in ("crop", "window"):
        raise ValueError(f"unknown blend {blend!r}; use 'crop' or 'window'")
    h, w = x.shape[-2:]
    with evaluating(model):
        if tile is None or (h <= tile and w <= tile):
            return model(x, **extra)
        if overlap is None:
            overlap = getattr(model, "receptive_radius", None)
            overlap = DEFAULT_OVERLAP if overlap is None else overlap
        align = getattr(model, "tile_align", 1) or 1
        rows, cols = tile_spans(h, tile, overlap, align), tile_spans(w, tile, overlap, align)
        out = weight = None
        scale = 1
        for r0, r1, kr0, kr1 in rows:
            for c0, c1, kc0, kc1 in cols:
                piece = model(x[..., r0:r1, c0:c1], **{k: crop_extra(k, v, (h, w), r0, r1, c0, c1) for k, v in extra.items()})
                if out is None:
                    scale = output_scale(model, x[..., r0:r1, c0:c1], piece)
                    out = torch.zeros(*x.shape[:2], h * scale, w * scale, dtype=piece.dtype, device=piece.device)
                    weight = torch.zeros(h * scale, w * scale, dtype=torch.float64, device=piece.device)
                if blend == "crop":
                    kr, kc = slice(kr0 * scale, kr1 * scale), slice(kc0 * scale, kc1 * scale)
                    out[..., kr, kc] = piece[..., (kr0 - r0) * scale : (kr1 - r0) * scale,
                                             (kc0 - c0) * scale : (kc1 - c0) * scale]
                else:
                    wr = ramp_weights(r0 * scale, r1 * scale, h * scale, overlap * scale)
                    wc = ramp_weights(c0 * scale, c1 * scale, w * scale, overlap * scale)
                    wt = torch.outer(wr, wc).to(piece.device)
                    out[..., r0 * scale : r1 * scale, c0 * scale : c1 * scale] += piece * wt.to(piece.dtype)
                    weight[r0 * scale : r1 * scale, c0 * scale : c1 * scale] += wt
        return out if blend == "crop" else out / weight.to(out.dtype)


def restore(model: nn.Module, x: np.ndarray, extra: dict[str, np.ndarray] | None = None, tile: int | None = None,
            overlap: int | None = None, device: str | torch.device = "cpu", blend: str = "crop") -> np.ndarray:
    """Restore one ``(B, h, w)`` numpy observation; returns float32 ``(B, H, W)`` numpy.

    ``extra`` holds the task's extra inputs as arrays without the batch axis (``mask`` ``(B, h, w)``,
    ``ref`` ``(3, h s, w s)``). The model is
    moved to ``device`` (and left there); see :func:`restore_batch` for tiling.
    """
    model.to(device)
    batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(device)
    extras = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))[None].to(device)
              for k, v in (extra or {}).items()}
    return restore_batch(model, batch, extras, tile, overlap, blend)[0].float().cpu().numpy()
