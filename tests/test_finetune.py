"""Stage 3 (hiralign.finetune): aligned pairs, mixture counts, run-directory inputs, a tiny finetune."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from hiralign import degrade, finetune as ft, restorers
from hiralign.store import ArtifactError, RunStore, file_digest
from hiralign.train import TrainConfig, load_checkpoint, read_checkpoint_config, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BANDS, SIZE = 8, 32


WAVELENGTHS = np.linspace(400.0, 700.0, BANDS)


def smooth_cubes(rng: np.random.Generator, n: int, bands: int = BANDS, size: int = SIZE) -> np.ndarray:
    """Piecewise-smooth random cubes in [0.1, 0.9]: a few blurred blobs with random spectra."""
    from scipy.ndimage import gaussian_filter

    cubes = []
    for _ in range(n):
        maps = gaussian_filter(rng.random((3, size, size)), sigma=(0, 3, 3))
        maps = (maps - maps.min()) / (np.ptp(maps) + 1e-9)
        spectra = rng.random((bands, 3))
        cubes.append(0.1 + 0.8 * np.einsum("bk,khw->bhw", spectra, maps) / 3)
    return np.stack(cubes).astype(np.float32)


def make_run(run_dir: Path, task: str = "denoise-gaussian", n_obs: int = 3, n_unobs: int = 2, n_guides: int = 2,
             warp_names: bool = True, seed: int = 0, held_out: int = 0) -> dict:
    """A tiny but complete run directory: 01_proxy.h5 (with clean; ``n_unobs`` of its images not
    flagged observed), 03_warp.h5, a source checkpoint (a small random-initialised registry
    backbone) and, with ``held_out``, a 00_data.h5 with that many target_unobserved images.
    Proxies = clean + a small bias; synthesized HSIs = flipped / shifted proxies."""
    rng = np.random.default_rng(seed)
    t = ft.get_task(task)
    n = n_obs + n_unobs
    clean = smooth_cubes(rng, n)
    observed = np.array([True] * n_obs + [False] * n_unobs)
    order = rng.permutation(n)  # observed images interleaved with unobserved ones
    clean, observed = clean[order], observed[order]
    names = [f"img{i}" for i in range(n)]
    obs = [t.degrade(c, seed=100 + i) for i, c in enumerate(clean)]
    proxies = np.clip(clean + 0.02, 0, 1).astype(np.float32)
    idx = np.flatnonzero(observed)
    hsi = np.stack([[np.roll(proxies[i], 3 * (g + 1), axis=2)[:, ::-1] for g in range(n_guides)] for i in idx])
    store = RunStore(run_dir)
    degradation = {"sigma": np.stack([o.info["sigma"] for o in obs])} if "sigma" in obs[0].info else {}
    if "mask" in obs[0].info:
        degradation["mask"] = np.stack([o.info["mask"] for o in obs])
    torch.manual_seed(seed)
    model = restorers.get(restorers.default_backbone(t), BANDS, t, **({"features": 8} if t.family == "denoise" else {}))
    source = Path(run_dir) / "source.safetensors"
    save_checkpoint(source, model, {"wavelengths": WAVELENGTHS.tolist(), "source": "test"})
    store.write("01_proxy", {"wavelengths": WAVELENGTHS, "names": names, "observed": observed,
                             "degraded": np.stack([o.data for o in obs]), "proxy": proxies,
                             "proxy_rgb": proxies[:, :3], "clean": clean, "degradation": degradation,
                             "source_checkpoint": str(source)},
                {"task": t.name, "checkpoint": str(source), "seed": 100})
    warp = {"hsi": hsi.astype(np.float32)}
    if warp_names:
        warp["names"] = [names[i] for i in idx]
    store.write("03_warp", warp, {"k": 16})
    held = smooth_cubes(rng, held_out) if held_out else np.zeros((0, BANDS, SIZE, SIZE), np.float32)
    if held_out:
        store.write("00_data", {"wavelengths": WAVELENGTHS, "source_train": {"cubes": smooth_cubes(rng, 2), "names": ["s0", "s1"]},
                                "target_unobserved": {"cubes": held, "names": [f"held{j}" for j in range(held_out)]}},
                    {"dataset": "test"}, attrs={"synthetic": True})
    return {"held": held, "clean": clean, "observed": observed, "proxies": proxies, "hsi": hsi, "names": names, "source": source,
            "degraded": np.stack([o.data for o in obs])}


# ----------------------------------------------------------------------------- ratio and composition


@pytest.mark.parametrize("text, value", [("3:1", 3.0), ("1:1", 1.0), ("10:1", 10.0), ("1:2", 0.5), (5, 5.0), ("2.5", 2.5)])
def test_parse_ratio(text, value):
    assert ft.parse_ratio(text) == value


@pytest.mark.parametrize("bad", ["0:1", "1:0", "-2", "a:b", "3:1:1"])
def test_parse_ratio_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="ratio"):
        ft.parse_ratio(bad)


@pytest.mark.parametrize("ratio, r", [("1:1", 1), ("2:1", 2), ("3:1", 3), ("5:1", 5), ("10:1", 10)])
def test_mixture_counts_follow_the_documented_table(ratio, r):
    p = 7
    assert ft.mixture_counts(p, "mixed", ratio) == {"proxy": p, "generated": r * p, "clean": 0}
    assert ft.mixture_counts(p, "proxy", ratio) == {"proxy": p, "generated": 0, "clean": 0}
    assert ft.mixture_counts(p, "generated", ratio) == {"proxy": 0, "generated": r * p, "clean": 0}
    assert ft.mixture_counts(p, "clean", ratio) == {"proxy": 0, "generated": 0, "clean": p}


@pytest.mark.parametrize("composition", ft.COMPOSITIONS)
@pytest.mark.parametrize("ratio", ["1:1", "3:1", "10:1", 2.5])
def test_epoch_schedule_has_the_stated_counts_and_balances_images(composition, ratio):
    p, g = 4, 3
    for epoch in range(3):
        refs = ft.epoch_schedule(p, g, composition, ratio, seed=1, epoch=epoch)
        counts = Counter(r.branch for r in refs)
        assert {b: counts.get(b, 0) for b in ("proxy", "generated", "clean")} == ft.mixture_counts(p, composition, ratio)
        per_image = Counter(r.image for r in refs if r.branch == "generated")
        if per_image:  # every image gets floor(r) or ceil(r) synthesized samples
            r = ft.parse_ratio(ratio)
            assert set(per_image.values()) <= {int(np.floor(r)), int(np.ceil(r))}
            assert all(0 <= ref.guide < g for ref in refs if ref.branch == "generated")
        if ft.parse_ratio(ratio) <= g and per_image:  # no HSI of an image repeats before all were used
            pairs = Counter((r.image, r.guide) for r in refs if r.branch == "generated")
            assert max(pairs.values()) == 1


def test_synthesized_subset_is_redrawn_each_epoch_and_reproducible():
    a = [ft.epoch_schedule(5, 3, "mixed", "1:1", seed=0, epoch=e) for e in range(4)]
    assert len({tuple(s) for s in a}) > 1
    assert a[2] == ft.epoch_schedule(5, 3, "mixed", "1:1", seed=0, epoch=2)


def test_unknown_composition_and_missing_branches_fail_clearly():
    rng = np.random.default_rng(0)
    prox = rng.random((2, BANDS, 16, 16))
    with pytest.raises(ValueError, match="unknown composition"):
        ft.AlignedPairs(prox, "denoise-gaussian", composition="both")
    with pytest.raises(ValueError, match="synthesized HSIs"):
        ft.AlignedPairs(prox, "denoise-gaussian", composition="mixed")
    with pytest.raises(ValueError, match="clean observed"):
        ft.AlignedPairs(prox, "denoise-gaussian", composition="clean")
    with pytest.raises(ValueError, match="do not match"):
        ft.AlignedPairs(prox, "denoise-gaussian", synthesized=rng.random((3, 2, BANDS, 16, 16)))


# ----------------------------------------------------------------------------- alignment


def _pairs(task: str, composition: str = "mixed", ratio="3:1", seed=3):
    rng = np.random.default_rng(seed)
    prox = smooth_cubes(rng, 3)
    syn = smooth_cubes(rng, 6).reshape(3, 2, BANDS, SIZE, SIZE)
    clean = smooth_cubes(rng, 3)
    return ft.AlignedPairs(prox, task, syn, clean, composition, ratio, seed=seed)


def test_sr_pairs_are_the_bicubic_downsampling_of_their_own_target():
    """Noise-free task: each input must equal D(its target) exactly, and differ from D(any other target)."""
    pairs = _pairs("sr-x4")
    epoch = pairs(0)
    targets = [pairs.proxies[i] for i in range(3)] + [pairs.synthesized[i, g] for i in range(3) for g in range(2)]
    for pair in epoch:
        assert pair.degraded.shape == (BANDS, SIZE // 4, SIZE // 4)
        expected = degrade.degrade("sr-bicubic", pairs.target(pair.ref), scale=4).data
        np.testing.assert_array_equal(pair.degraded, expected)
        np.testing.assert_array_equal(pair.clean, pairs.target(pair.ref))
        others = [t for t in targets if not np.array_equal(t, pair.clean)]
        assert all(np.abs(pair.degraded - degrade.degrade("sr-bicubic", t, scale=4).data).max() > 1e-2 for t in others)


def test_noisy_pairs_are_reproduced_from_their_seed_and_residual_is_the_noise():
    pairs = _pairs("denoise-gaussian")
    for epoch in (0, 1):
        for i, pair in enumerate(pairs(epoch)):
            assert pair.seed == ft.pair_seed(pairs.seed, epoch, i)
            rebuilt = degrade.degrade("gaussian-noniid", pairs.target(pair.ref), seed=pair.seed)
            np.testing.assert_array_equal(pair.degraded, rebuilt.data)
            # the residual is pure noise of the recorded per-band sigma (statistical check, 1024 px per band)
            residual_std = (pair.degraded - pair.clean).reshape(BANDS, -1).std(axis=1)
            np.testing.assert_allclose(residual_std, pair.info["sigma"], rtol=0.15)
    # the synthesized branch uses exactly the warped HSI named by its ref
    pair = next(p for p in pairs(0) if p.ref.branch == "generated")
    np.testing.assert_array_equal(pair.clean, pairs.synthesized[pair.ref.image, pair.ref.guide])
    assert pairs.pair(0, 5).seed == pairs(0)[5].seed


def test_degradations_are_redrawn_every_epoch():
    pairs = _pairs("denoise-gaussian", composition="proxy")
    a, b = pairs(0), pairs(1)
    assert [p.ref for p in a] == [p.ref for p in b]
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.clean, pb.clean)
        assert not np.array_equal(pa.degraded, pb.degraded)
    np.testing.assert_array_equal(pairs(0)[0].degraded, a[0].degraded)  # same epoch, same draw


def test_clean_composition_uses_the_clean_observed_hsis_and_masks_reach_the_pair():
    pairs = _pairs("inpaint", composition="clean")
    epoch = pairs(0)
    assert len(epoch) == 3 and all(p.ref.branch == "clean" for p in epoch)
    for p in epoch:
        np.testing.assert_array_equal(p.clean, pairs.clean[p.ref.image])
        np.testing.assert_array_equal(p.extra["mask"], p.info["mask"].astype(np.float32))
        assert np.all(p.degraded[~p.info["mask"]] == 0)


# ----------------------------------------------------------------------------- run directory


@pytest.mark.parametrize("warp_names", [True, False])
def test_load_inputs_keeps_observed_images_in_order(tmp_path, warp_names):
    run = make_run(tmp_path, warp_names=warp_names)
    inputs = ft.load_inputs(tmp_path)
    obs = run["observed"]
    np.testing.assert_array_equal(inputs.proxies, run["proxies"][obs])
    np.testing.assert_array_equal(inputs.synthesized, run["hsi"])
    np.testing.assert_array_equal(inputs.clean_observed, run["clean"][obs])
    assert inputs.task == "denoise-gaussian" and inputs.names == run["names"]
    assert ft.resolve_checkpoint(inputs.source_checkpoint, tmp_path) == run["source"].resolve()


def test_missing_artifacts_name_the_notebook_that_makes_them(tmp_path):
    with pytest.raises(ArtifactError, match=r"01_proxy\.h5 is missing; run notebooks/01_proxy\.ipynb"):
        ft.load_inputs(tmp_path)
    make_run(tmp_path)
    (tmp_path / "03_warp.h5").unlink()
    with pytest.raises(ArtifactError, match=r"03_warp\.h5 is missing; run notebooks/03_warp\.ipynb"):
        ft.load_inputs(tmp_path)
    assert ft.load_inputs(tmp_path, need_synthesized=False).synthesized is None


def test_validation_sets(tmp_path):
    run = make_run(tmp_path)
    inputs = ft.load_inputs(tmp_path)
    proxy_val = ft.validation_set(inputs, "proxy")
    assert len(proxy_val) == 3
    np.testing.assert_array_equal(proxy_val[1].clean, inputs.proxies[1])
    clean_val = ft.validation_set(inputs, "clean")
    assert len(clean_val) == 5
    np.testing.assert_array_equal(clean_val[4].degraded, run["degraded"][4])
    assert ft.validation_set(inputs, "none") == []
    with pytest.raises(ValueError, match="unknown validation"):
        ft.validation_set(inputs, "test")


def test_target_images_add_the_held_out_images_of_00_data(tmp_path):
    run = make_run(tmp_path, n_obs=2, n_unobs=1, held_out=2)
    targets = ft.target_images(ft.load_inputs(tmp_path))
    assert targets.names == run["names"] + ["held0", "held1"] and targets.held_out == 2
    np.testing.assert_array_equal(targets.observed, np.concatenate([run["observed"], [False, False]]))
    np.testing.assert_array_equal(targets.degraded[:3], run["degraded"])  # 01's stored observations
    np.testing.assert_array_equal(targets.clean[3:], run["held"])
    for j in range(2):  # held-out image j: seed_01 + n_01 + j
        expected = degrade.degrade("gaussian-noniid", run["held"][j], seed=100 + 3 + j).data
        np.testing.assert_array_equal(targets.degraded[3 + j], expected)
    assert len(ft.validation_set(ft.load_inputs(tmp_path), "clean")) == 5


def test_finetune_runs_names():
    assert ft.finetune_runs("mixed", ["proxy", "mixed"], upper_bound=True) == {
        "adapted": "mixed", "proxy-only": "proxy", "upper-bound": "clean"}
    assert ft.parse_list(" proxy, generated ,") == ["proxy", "generated"]


# ----------------------------------------------------------------------------- a tiny finetune


def test_tiny_finetune_improves_and_writes_its_checkpoint_and_curves(tmp_path):
    make_run(tmp_path, n_obs=3, n_guides=2)
    inputs = ft.load_inputs(tmp_path)
    pairs = ft.AlignedPairs(inputs.proxies, inputs.task, inputs.synthesized, composition="mixed", ratio="2:1", seed=0)
    config = TrainConfig(epochs=3, steps_per_epoch=8, batch_size=4, patch_size=16, lr=2e-3, seed=0)
    out = ft.model_path(tmp_path)
    assert out.name == "04_model.safetensors"
    val = ft.validation_set(inputs, "clean")
    result = ft.finetune(inputs.source_checkpoint, pairs, config, out=out, val_pairs=val, progress=False,
                         wavelengths=inputs.wavelengths)
    assert out.exists() and not Path(str(out) + ".resume.pt").exists()
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3]
    assert result.history[-1]["psnr"] > result.history[0]["psnr"]  # finetuning helped on the clean target
    cfg = read_checkpoint_config(out)
    assert cfg["finetune"]["composition"] == "mixed" and cfg["finetune"]["pairs_per_epoch"]["generated"] == 6
    assert cfg["source_checkpoint_sha256"] == file_digest(inputs.source_checkpoint)
    assert cfg["task"] == "denoise-gaussian" and cfg["bands"] == BANDS
    loaded = load_checkpoint(out, bands=BANDS, task="denoise-gaussian")
    for a, b in zip(loaded.model.state_dict().values(), result.model.state_dict().values()):
        torch.testing.assert_close(a.cpu(), b.cpu())
    # curves artifact round trip
    store = RunStore(tmp_path)
    store.write(ft.STAGE, ft.curves_tree({"adapted": result.history}, {"adapted": out}, {"adapted": "mixed"}),
                {"ratio": "2:1", "seed": 0}, files={out.name: file_digest(out)})
    back = ft.load(store)
    np.testing.assert_array_equal(back.curves["adapted"]["epoch"], [0, 1, 2, 3])
    assert np.isnan(back.curves["adapted"]["loss"][0]) and np.isfinite(back.curves["adapted"]["loss"][1:]).all()
    assert back.models == {"adapted": out} and back.compositions == {"adapted": "mixed"}
    assert back.counts["adapted"]["generated"] == 6


def test_finetune_rejects_a_checkpoint_for_another_task(tmp_path):
    make_run(tmp_path)
    inputs = ft.load_inputs(tmp_path)
    pairs = ft.AlignedPairs(inputs.proxies, "denoise-complex", composition="proxy")
    with pytest.raises(Exception, match="denoise-complex"):
        ft.finetune(inputs.source_checkpoint, pairs, TrainConfig(epochs=1, steps_per_epoch=1, batch_size=2, patch_size=16),
                    progress=False)


# ----------------------------------------------------------------------------- notebook 04


NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_finetune.ipynb"
TINY = dict(epochs=1, steps_per_epoch=2, batch=2, patch=16, compare="proxy", upper_bound=True, threads=1)


def _outputs(path: Path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
def test_notebook_04_writes_models_and_curves_then_skips(tmp_path):
    import papermill

    run_dir = tmp_path / "run"
    make_run(run_dir)
    for i in range(2):
        out = tmp_path / f"04_{i}.ipynb"
        papermill.execute_notebook(str(NOTEBOOK), str(out), parameters={"run_dir": str(run_dir), **TINY},
                                   cwd=str(NOTEBOOK.parent), progress_bar=False, kernel_name="python3")
    assert ft.model_path(run_dir).exists()
    assert ft.model_path(run_dir, "proxy-only").exists() and ft.model_path(run_dir, "upper-bound").exists()
    back = ft.load(RunStore(run_dir))
    assert back.compositions == {"adapted": "mixed", "proxy-only": "proxy", "upper-bound": "clean"}
    assert list(back.curves["adapted"]["epoch"]) == [0, 1]
    assert "finetuning 'adapted'" in _outputs(tmp_path / "04_0.ipynb")
    assert "04_finetune.h5 is current (same parameters and inputs): loaded it" in _outputs(tmp_path / "04_1.ipynb")


@pytest.mark.slow
def test_notebook_04_without_inputs_names_the_missing_artifact(tmp_path):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError, match=r"01_proxy\.h5 is missing; run notebooks/01_proxy\.ipynb"):
        papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), parameters={"run_dir": str(tmp_path), "threads": 1},
                                   cwd=str(NOTEBOOK.parent), progress_bar=False, kernel_name="python3")
