"""Restoration tasks: which degradation makes the observation and how a restorer is called on it.

A task ties a name used everywhere (notebook parameter ``task``, checkpoint config, CLI) to

* the degradation operator of :mod:`hiralign.degrade` and its parameters (paper Sec. IV-D), and the
  operator that makes TRAINING pairs where it differs (complex noise: HSIR trains on non-i.i.d.
  Gaussian plus one sparse noise per sample, ``complex-train``, and tests on the full mixture),
* the backbone *family* that solves it: ``denoise`` (same size in and out), ``sr`` (low-resolution
  cube in, ``scale`` times larger out), ``sr-ref`` (the same plus an unregistered high-resolution
  RGB reference: ``model(x, ref=r)``, UAFL's setting) or ``general`` (same size, plus the
  observation mask as an extra input: ``model(x, mask=m)``),
* the extra inputs a restorer receives, taken from the degradation info.

Every restorer is called as ``model(x, **task.extra_inputs(info))`` on an ``(N, B, h, w)`` batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hiralign import degrade as dg
from hiralign.data import Cube
from hiralign.registry import Registry

FAMILIES = ("denoise", "sr", "sr-ref", "general")


@dataclass(frozen=True)
class Task:
    """A restoration task: ``degradation`` (a :mod:`hiralign.degrade` name) with ``params``, solved
    by a backbone of ``family``; ``scale`` > 1 only for super-resolution. ``training_degradation``
    (same ``params``) makes the training pairs when set; observations and evaluation always use
    ``degradation``."""

    name: str
    family: str
    degradation: str
    params: dict = field(default_factory=dict)
    scale: int = 1
    description: str = ""
    training_degradation: str = ""

    def degrade(self, clean: np.ndarray, seed: int, training: bool = False) -> dg.Degraded:
        """The degraded observation of a clean ``(B, H, W)`` array (seeded, deterministic);
        ``training=True`` for a training pair (``training_degradation`` when the task has one)."""
        name = self.training_degradation if training and self.training_degradation else self.degradation
        return dg.degrade(name, clean, seed=seed, **self.params)

    def degrade_cube(self, clean: Cube, seed: int) -> Cube:
        """A degraded :class:`Cube` (wavelengths kept, info in ``meta["degradation"]``)."""
        return dg.apply(self.degradation, clean, seed=seed, **self.params)

    def extra_inputs(self, info: dict | None, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Keyword inputs besides the observation: for the ``general`` family the observation
        ``mask`` (float32, ``shape`` = the observation's (B, h, w), 1 = observed; all ones when the
        degradation hides nothing, as for blur); for ``sr-ref`` the reference ``ref`` (float32
        ``(3, h * scale, w * scale)``). Empty for the other families."""
        if self.family == "sr-ref":
            return {"ref": self.reference(info, shape)}
        if self.family != "general":
            return {}
        mask = (info or {}).get("mask")
        if mask is None:
            return {"mask": np.ones(shape, dtype=np.float32)}
        mask = np.asarray(mask, dtype=np.float32)
        if mask.shape != tuple(shape):
            raise ValueError(f"task {self.name!r}: mask shape {mask.shape} differs from observation shape {tuple(shape)}")
        return {"mask": mask}

    def reference(self, info: dict | None, shape: tuple[int, ...]) -> np.ndarray:
        """The ``sr-ref`` reference of a degradation ``info``, checked against the LR ``shape`` (B, h, w)."""
        ref = (info or {}).get("ref")
        if ref is None:
            raise ValueError(f"task {self.name!r} needs the reference RGB 'ref' of its degradation; the info has none")
        ref = np.asarray(ref, dtype=np.float32)
        expected = (3, shape[-2] * self.scale, shape[-1] * self.scale)
        if ref.shape != expected:
            raise ValueError(f"task {self.name!r}: reference shape {ref.shape} differs from (3, h x {self.scale}, w x {self.scale}) = {expected}")
        return ref


#: The tasks by name (a :class:`~hiralign.registry.Registry`: ``TASKS.names()``, ``"sr-x4" in TASKS``).
TASKS: Registry[Task] = Registry("task")
for _task in (
    Task("denoise-gaussian", "denoise", "gaussian-noniid",
         description="non-i.i.d. Gaussian noise, per-band sigma from {10,30,50,70}/255"),
    Task("denoise-complex", "denoise", "complex", training_degradation="complex-train",
         description="non-i.i.d. Gaussian + stripe + deadline + impulse noise on B/3 bands each; "
                     "trained on Gaussian + one of {none, impulse, stripe, deadline} per sample (HSIR)"),
    Task("sr-x4", "sr", "sr-bicubic", {"scale": 4}, scale=4,
         description="bicubic x4 downsampling; the restorer upsamples x4"),
    Task("sr-ref-x4", "sr-ref", "sr-ref", {"scale": 4}, scale=4,
         description="bicubic x4 downsampling with an unregistered HR RGB reference (4 px shift, 1 deg, 1% zoom, 1 px elastic)"),
    Task("sr-ref-x8", "sr-ref", "sr-ref", {"scale": 8}, scale=8,
         description="bicubic x8 downsampling with an unregistered HR RGB reference (4 px shift, 1 deg, 1% zoom, 1 px elastic)"),
    Task("deblur", "general", "blur", {"radius": 15},
         description="Gaussian blur, radius 15 (mask = all observed)"),
    Task("bandmiss", "general", "bandmiss", {"ratio": 0.3},
         description="30% of the bands missing (mask given)"),
    Task("inpaint", "general", "inpaint", {"ratio": 0.9},
         description="90% of the pixels missing in every band (mask given)"),
):
    TASKS.register(_task.name, _task)
del _task


def get_task(task: str | Task) -> Task:
    """The :class:`Task` called ``task`` (a Task passes through); unknown names list the known ones
    (:class:`~hiralign.registry.UnknownNameError`, a ``ValueError``)."""
    if isinstance(task, Task):
        return task
    return TASKS.get(task)
