"""Training loop, checkpoints and the committed demo checkpoints (tiny problems on CPU)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from hiralign import restorers
from hiralign.data import Cube
from hiralign.cli.pretrain import pretrain_main
from hiralign.tasks import get_task
from hiralign.train import (
    CHECKPOINT_DIR,
    CheckpointError,
    Pair,
    TrainConfig,
    collate,
    crop_pair,
    degraded_patches,
    epoch_rng,
    evaluate_restorer,
    fit,
    load_checkpoint,
    read_checkpoint_config,
    resume_path,
    save_checkpoint,
    source_model,
    train,
    train_pairs,
)

BANDS = 8
TINY = TrainConfig(epochs=3, steps_per_epoch=8, batch_size=4, patch_size=16, lr=3e-3, seed=0)


def tiny_cubes(n: int = 3, size: int = 24, bands: int = BANDS, seed: int = 0) -> list[Cube]:
    """Smooth spectra on blocky layouts: easy to denoise, so a few steps visibly lower the loss."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(420, 680, bands)
    cubes = []
    for i in range(n):
        labels = np.kron(rng.integers(0, 4, (size // 8, size // 8)), np.ones((8, 8), dtype=int))
        spectra = 0.2 + 0.6 * rng.random((4, 1)) * np.linspace(0.5, 1.0, bands)[None] ** rng.uniform(0.5, 2, (4, 1))
        cubes.append(Cube(np.moveaxis(spectra[labels], -1, 0).astype(np.float32), wl, name=f"tiny-{i}"))
    return cubes


def test_training_lowers_the_loss_and_improves_validation_psnr():
    torch.manual_seed(0)
    model = restorers.get("spectral-cnn", BANDS, "denoise-gaussian", features=16, blocks=1)
    cubes = tiny_cubes()
    before = evaluate_restorer(model, cubes[:1], "denoise-gaussian")["psnr"]
    result = train(model, cubes, "denoise-gaussian", TINY, val_cubes=cubes[:1], progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.final["psnr"] > before + 3
    assert {"psnr", "ssim", "sam", "input_psnr", "lr", "seconds"} <= set(result.final)
    assert result.history[-1]["lr"] == pytest.approx(TINY.min_lr)  # cosine schedule ends at min_lr


STAND_INS = [n for n in restorers.names() if n not in restorers.paper.FAITHFUL]  # faithful: tests/test_<net>_*.py
TASK_OF_FAMILY = {"denoise": "denoise-gaussian", "sr": "sr-x4", "general": "inpaint"}


@pytest.mark.parametrize("name", STAND_INS)
def test_a_short_training_run_lowers_the_loss_of_every_stand_in(name):
    task = TASK_OF_FAMILY[restorers.backbone(name).family]
    torch.manual_seed(0)
    model = restorers.get(name, BANDS, task)
    config = replace(TINY, epochs=2, steps_per_epoch=6, patch_size=32 if task == "sr-x4" else 16)
    result = train(model, tiny_cubes(size=32), task, config, progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0], losses


def test_patches_are_seeded_per_epoch_and_redrawn_between_epochs():
    cubes, task = tiny_cubes(), get_task("denoise-complex")
    first = degraded_patches(cubes, task, 3, 16, epoch_rng(5, 0))
    again = degraded_patches(cubes, task, 3, 16, epoch_rng(5, 0))
    other = degraded_patches(cubes, task, 3, 16, epoch_rng(5, 1))
    assert all(np.array_equal(a.degraded, b.degraded) for a, b in zip(first, again))
    assert not np.array_equal(first[0].degraded, other[0].degraded)
    x, y, extra = collate(first, "cpu")
    assert x.shape == y.shape == (3, BANDS, 16, 16) and extra == {}


def test_sr_patches_and_pair_crops_stay_aligned():
    cubes, task = tiny_cubes(size=32), get_task("sr-x4")
    pair = degraded_patches(cubes, task, 1, 16, epoch_rng(0, 0))[0]
    assert pair.degraded.shape == (BANDS, 4, 4) and pair.clean.shape == (BANDS, 16, 16)
    clean = np.random.default_rng(0).random((BANDS, 40, 48)).astype(np.float32)
    def block_mean(a):  # a flip-symmetric x4 downsampling, so flipped crops must stay consistent
        return a.reshape(a.shape[0], a.shape[1] // 4, 4, a.shape[2] // 4, 4).mean(axis=(2, 4))

    for seed in range(4):
        crop = crop_pair(Pair(block_mean(clean), clean, {}), 16, np.random.default_rng(seed), augment=True)
        np.testing.assert_allclose(crop.degraded, block_mean(crop.clean), atol=1e-6)
    mask_pair = Pair(clean * 0, clean, {"mask": clean > 0.5})
    crop = crop_pair(mask_pair, 16, np.random.default_rng(2), augment=True)
    np.testing.assert_array_equal(crop.extra["mask"], crop.clean > 0.5)


def test_train_pairs_accepts_a_per_epoch_pair_generator():
    cubes, task = tiny_cubes(), get_task("denoise-gaussian")
    seen = []

    def pairs(epoch):
        seen.append(epoch)
        return [Pair(task.degrade(c.data, seed=epoch * 10 + i).data, c.data) for i, c in enumerate(cubes)]

    torch.manual_seed(0)
    model = restorers.get("spectral-cnn", BANDS, task, features=16, blocks=1)
    result = train_pairs(model, pairs, replace(TINY, epochs=2), val_pairs=pairs(99), progress=False)
    assert seen[1:] == [0, 1] and len(result.history) == 2 and "psnr" in result.final


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = restorers.get("tiny-unet", BANDS, "inpaint", features=8)
    path = save_checkpoint(tmp_path / "m.safetensors", model, {"wavelengths": [1.0] * BANDS, "metrics": {"psnr": 1.0}})
    loaded = load_checkpoint(path, bands=BANDS, task="inpaint")
    x, mask = torch.rand(1, BANDS, 20, 20), (torch.rand(1, BANDS, 20, 20) > 0.5).float()
    with torch.no_grad():
        assert torch.equal(model.eval()(x, mask=mask), loaded.model(x, mask=mask))
    assert loaded.config["backbone"] == "tiny-unet" and loaded.config["cfg"]["features"] == 8
    assert loaded.config["metrics"] == {"psnr": 1.0} and loaded.path == path


def test_checkpoint_for_other_bands_or_task_fails_naming_both(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", restorers.get("spectral-cnn", BANDS, "denoise-gaussian"))
    with pytest.raises(CheckpointError, match=r"trained for 8 bands and task 'denoise-gaussian', but 31 bands"):
        load_checkpoint(path, bands=31, task="denoise-gaussian")
    with pytest.raises(CheckpointError, match=r"task 'denoise-gaussian', but 8 bands and task 'denoise-complex'"):
        load_checkpoint(path, bands=BANDS, task="denoise-complex")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_checkpoint_config(tmp_path / "junk.safetensors")


def test_a_user_module_trains_checkpoints_and_reloads(tmp_path):
    class Denoiser(nn.Module):  # the documented plug-in contract: model(x) -> restored batch
        def __init__(self, bands):
            super().__init__()
            self.net = nn.Conv2d(bands, bands, 3, padding=1)

        def forward(self, x):
            return x - self.net(x)

    torch.manual_seed(0)
    model = Denoiser(BANDS)
    path = tmp_path / "user.safetensors"
    result = train(model, tiny_cubes(), "denoise-gaussian", replace(TINY, epochs=1), checkpoint=path,
                   meta={"bands": BANDS}, progress=False)
    assert result.checkpoint == path and not resume_path(path).exists()
    with pytest.raises(CheckpointError, match="pass model="):
        load_checkpoint(path)
    loaded = load_checkpoint(path, bands=BANDS, task="denoise-gaussian", model=Denoiser(BANDS)).model
    x = torch.rand(1, BANDS, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    cubes, task = tiny_cubes(), get_task("denoise-gaussian")
    config = replace(TINY, epochs=3, steps_per_epoch=3)

    def batches(epoch, fail_at=None):
        if epoch == fail_at:
            raise KeyboardInterrupt
        rng = epoch_rng(config.seed, epoch)
        for _ in range(config.steps_per_epoch):
            yield collate(degraded_patches(cubes, task, 2, 16, rng), "cpu")

    def fresh():
        torch.manual_seed(0)
        return restorers.get("spectral-cnn", BANDS, task, features=8, blocks=1)

    straight = fit(fresh(), batches, config, progress=False).model
    path = tmp_path / "run.safetensors"
    with pytest.raises(KeyboardInterrupt):
        fit(fresh(), lambda e: batches(e, fail_at=2), config, checkpoint=path, progress=False)
    assert resume_path(path).exists() and not path.exists()
    resumed = fit(fresh(), batches, config, checkpoint=path, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    other = tmp_path / "other.safetensors"
    with pytest.raises(KeyboardInterrupt):
        fit(fresh(), lambda e: batches(e, fail_at=1), config, checkpoint=other, progress=False)
    with pytest.raises(CheckpointError, match=r"other training parameters \(lr\)"):
        fit(fresh(), batches, replace(config, lr=1e-2), checkpoint=other, progress=False)


def test_pretrain_main_writes_a_checkpoint_with_source_and_target_scores(tmp_path, capsys):
    out = tmp_path / "pre.safetensors"
    code = pretrain_main(["--task", "denoise-gaussian", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
                          "--patch-size", "16", "--image-size", "32", "--out", str(out), "--quiet",
                          "--backbone", "spectral-cnn"])
    assert code == 0 and out.exists()
    config = read_checkpoint_config(out)
    assert config["bands"] == 31 and config["task"] == "denoise-gaussian" and len(config["wavelengths"]) == 31
    assert {"source_test", "target_observed"} <= set(config["evaluation"])
    assert "SYNTHETIC" in config["source"] and "target_observed" in capsys.readouterr().out
    assert config["command"].startswith("hiralign pretrain --task denoise-gaussian")


def test_source_model_prefers_the_demo_checkpoint_and_rejects_a_mismatched_backbone(tmp_path):
    # the embedded synthetic source, the data the demo checkpoints were trained on
    cubes = [Cube(np.zeros((31, 16, 16), np.float32), np.arange(400.0, 701.0, 10.0), meta={"synthetic": True})]
    demo = source_model("denoise-gaussian", cubes)
    assert demo.path == CHECKPOINT_DIR / "denoise-gaussian.safetensors"
    with pytest.raises(CheckpointError, match="holds backbone 'spectral-cnn', but backbone 'qrnn3d'"):
        source_model("denoise-gaussian", cubes, checkpoint=str(demo.path), backbone="qrnn3d")


DEMO = {"denoise-gaussian": "spectral-cnn", "denoise-complex": "spectral-cnn", "sr-x4": "tiny-sspsr"}


@pytest.mark.parametrize("task", DEMO)
def test_committed_demo_checkpoints_are_small_and_load(task):
    path = CHECKPOINT_DIR / f"{task}.safetensors"
    assert path.stat().st_size < 5e6
    loaded = load_checkpoint(path, bands=31, task=task)
    assert loaded.config["backbone"] == DEMO[task] and "evaluation" in loaded.config
    assert loaded.config["wavelengths"] == list(np.arange(400.0, 701.0, 10.0))


def test_demo_denoiser_beats_the_noisy_input_by_8_db_on_source_test_images():
    from hiralign.data.synthetic import make_benchmark

    model = load_checkpoint(CHECKPOINT_DIR / "denoise-gaussian.safetensors", bands=31, task="denoise-gaussian").model
    scores = evaluate_restorer(model, make_benchmark().source_test, "denoise-gaussian")
    assert scores["psnr"] >= scores["input_psnr"] + 8.0


def test_demo_checkpoint_stands_only_for_the_synthetic_source_it_was_trained_on():
    from hiralign.train.source import demo_fits

    wl = np.arange(400.0, 701.0, 10.0)
    synthetic = [Cube(np.zeros((31, 4, 4), np.float32), wl, meta={"synthetic": True})]
    real = [Cube(np.zeros((31, 4, 4), np.float32), wl, meta={"synthetic": False})]  # e.g. ICVL tiles
    narrower = [Cube(np.zeros((29, 4, 4), np.float32), wl[2:], meta={"synthetic": True})]
    demo = {"bands": 31, "backbone": "spectral-cnn"}
    assert demo_fits(demo, synthetic) and demo_fits(demo, synthetic, "spectral-cnn")
    assert not demo_fits(demo, real) and not demo_fits(demo, narrower) and not demo_fits(demo, synthetic, "sert")
