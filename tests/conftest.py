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
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def cave_path() -> Path:
    if not CAVE_SCENE.exists():
        pytest.skip(f"real CAVE scene not found at {CAVE_SCENE}")
    return CAVE_SCENE
