"""Shared fixtures: seeds, and the real CAVE scene from the sibling folder ../shared/data when it is
present (tests that need it skip, naming the path, when it is absent; never copied into the repo)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("HIRALIGN_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "test"))

REPO = Path(__file__).resolve().parents[1]
CAVE_SCENE = REPO.parent / "shared" / "data" / "cave_balloons_ms_256.mat"


@pytest.fixture
def one_torch_thread():
    """One torch intra-op thread for a test (restored after): tiny models on a shared 2-core machine
    run 5-20x faster without the thread pool's spin-waiting. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def cave_path() -> Path:
    if not CAVE_SCENE.exists():
        pytest.skip(f"real CAVE scene not found at {CAVE_SCENE}")
    return CAVE_SCENE


@pytest.fixture(scope="session")
def cave_crop(cave_path) -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 64 x 31 centre crop of the real CAVE balloons scene and its proxy RGB (Eq. 4); the warp tests' scene."""
    import scipy.io

    from hiralign.spectral import VISIBLE_31, to_rgb

    size = 64
    cube = scipy.io.loadmat(cave_path)["Omsi"].astype(np.float32).transpose(2, 0, 1) / 65535.0
    top = (cube.shape[1] - size) // 2
    hsi = np.ascontiguousarray(cube[:, top : top + size, top : top + size])
    return hsi, to_rgb(hsi, VISIBLE_31)
