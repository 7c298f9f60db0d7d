"""Shared pieces of the faithful-network tests (``tests/test_<network>_*.py``): smooth synthetic
cubes and a short plain-Adam fit on one fixed batch."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def smooth_cubes(n: int, bands: int, size: int, seed: int = 0, frequencies: tuple[float, float] = (4, 3)) -> torch.Tensor:
    """``(n, bands, size, size)`` smooth, spectrally correlated cubes in [0.1, 0.9]: a sinusoidal
    layout (random phase per cube) scaled by a ramp spectrum."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    phase = torch.rand(n, 1, 1, 1, generator=g) * 6.28
    spectra = torch.linspace(0.5, 1.0, bands).view(1, bands, 1, 1)
    return 0.5 + 0.4 * torch.sin(frequencies[0] * xx + frequencies[1] * yy + phase) * spectra


def fit_losses(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, steps: int, lr: float,
               loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
               **extra: torch.Tensor) -> list[float]:
    """The loss before each of ``steps`` Adam steps (learning rate ``lr``) of ``model(inputs, **extra)`` towards ``target``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        value = loss(model(inputs, **extra), target)
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses

