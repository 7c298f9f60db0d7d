"""SDEdit-style start of the reverse diffusion (Eq. 8), shared by the unCLIP and local-DDPM generators.

``strength`` in [0, 1] sets the starting step ``t0 = strength * T`` of a sampler with ``steps``
inference steps: the clean proxy (latent) ``x0`` is noised to ``x_t0 = sqrt(abar_t0) x0 +
sqrt(1 - abar_t0) eps`` and only the last ``round(strength * steps)`` steps are run. ``strength = 0``
runs no step (the proxy comes back unchanged), ``strength = 1`` starts from pure noise at the
noisiest step (no proxy information left: plain unconditional-start sampling).
"""
from __future__ import annotations

import numpy as np
import torch


def torch_generator(seed: int, index: int) -> torch.Generator:
    """An independent CPU random stream for proxy ``index`` of a run seeded with ``seed``.

    Noise is always drawn on the CPU and then moved, so results do not depend on the device.
    """
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) << 32 | int(state[1]))


def check_strength(strength: float) -> float:
    """``strength`` as a float, or ``ValueError`` when it lies outside [0, 1]."""
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must lie in [0, 1] (fraction of the diffusion run); got {strength}")
    return strength


def start_timesteps(scheduler, steps: int, strength: float) -> torch.Tensor:
    """The sampler's timesteps from ``t0 = strength * T`` down to 0 (the tail of a ``steps``-step run)."""
    strength = check_strength(strength)
    if int(steps) < 1:
        raise ValueError(f"steps must be a positive number of inference steps; got {steps}")
    scheduler.set_timesteps(int(steps))
    n_run = min(int(round(strength * steps)), int(steps))
    order = getattr(scheduler, "order", 1)
    return scheduler.timesteps[(int(steps) - n_run) * order:] if n_run else scheduler.timesteps[:0]


def noise_to_start(scheduler, x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, strength: float) -> torch.Tensor:
    """Eq. 8: ``x_t0 = sqrt(abar_t0) x0 + sqrt(1 - abar_t0) eps`` at the first of ``timesteps``.

    ``strength = 1`` is the unmodified sampler: pure Gaussian noise (times the scheduler's initial
    sigma), no trace of ``x0`` - the "original unCLIP" start the paper improves upon.
    """
    if check_strength(strength) == 1.0:
        return noise * scheduler.init_noise_sigma
    if len(timesteps) == 0:
        return x0
    t0 = timesteps[:1].repeat(x0.shape[0])
    return scheduler.add_noise(x0, noise, t0)
