"""hiralign.runtime: one device resolver and one thread limiter for every stage."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch


from hiralign.errors import UserError
from hiralign.runtime import DeviceError, resolve_device, thread_limit

NO_GPU = not torch.cuda.is_available()


def test_auto_and_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu" and resolve_device(" CPU ") == "cpu"
    assert resolve_device(torch.device("cpu")) == "cpu"


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_names_the_fix(name):
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match=rf"device '{name}' requested but torch sees no CUDA GPU; use device 'cpu' or 'auto'"):
        resolve_device(name)


@pytest.mark.skipif(NO_GPU, reason="needs a GPU")
def test_cuda_with_a_gpu():
    assert resolve_device("cuda") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(DeviceError, match="cuda:99"):
        resolve_device("cuda:99")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", ""])
def test_unknown_device_is_a_user_error(name):
    with pytest.raises(DeviceError, match="unknown device") as err:
        resolve_device(name)
    assert isinstance(err.value, UserError)


def test_thread_limit_sets_and_restores_torch_and_faiss_threads():
    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    with thread_limit(1):
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    assert torch.get_num_threads() == torch_before and faiss.omp_get_max_threads() == faiss_before
    with thread_limit(0):
        assert torch.get_num_threads() == torch_before
    with pytest.raises(KeyError):  # restored on errors too
        with thread_limit(1):
            raise KeyError("x")
    assert torch.get_num_threads() == torch_before


def test_default_threads_follow_the_share_a_grid_gives_each_run():
    """Stage defaults are ``threads=0``: a run under ``--jobs N`` (OMP_NUM_THREADS = cores / N, set
    by the executor and inherited by the kernels) keeps that share, so two runs never oversubscribe."""
    import os
    import subprocess
    import sys

    from hiralign.warp import WarpParams

    assert WarpParams().threads == 0
    code = ("import torch, faiss; from hiralign.runtime import thread_limit\n"
            "with thread_limit(0): print(torch.get_num_threads(), faiss.omp_get_max_threads())")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["1", "1"]


def test_warp_accepts_device_auto():
    from hiralign.warp import spectral_warp

    rng = np.random.default_rng(0)
    hsi = rng.random((5, 12, 12)).astype(np.float32)
    rgb = rng.random((3, 12, 12)).astype(np.float32)
    result = spectral_warp(hsi, rgb, rgb[:, ::-1].copy(), device="auto", iters=2, k=2, radius=1, n_candidates=4,
                           patch=3, threads=1)
    assert result.hsi.shape == hsi.shape and np.isfinite(result.hsi).all()
    assert result.params["device"] == resolve_device("auto")
