"""Plugged backbones (hiralign.restorers.plugins) and released checkpoints (hiralign.train.released):
a network defined in this file, named by its file path, built, adapted, trained, saved and reloaded
in another process; .pth files in the nestings of other code bases."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hiralign import restorers
from hiralign.restorers.inference import restore
from hiralign.restorers.plugins import Plugged, PluginError
from hiralign.train import (CheckpointError, TrainConfig, load_checkpoint, load_released, read_checkpoint_config,
                            read_state_dict, source_model, train)

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().relative_to(REPO).as_posix()  # tests/test_plugins.py, relative to the project root


class Conv3dDenoiser(nn.Module):
    """A 3-D convolution network in the (N, 1, B, H, W) layout with one stride-2 level, so H and W
    must be even: the shape of QRNN3D-style networks. Declares neither layout nor multiple."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.down = nn.Conv3d(1, channels, 3, stride=(1, 2, 2), padding=1)
        self.up = nn.ConvTranspose3d(channels, 1, (3, 4, 4), stride=(1, 2, 2), padding=1)

    def forward(self, x):
        assert x.dim() == 5 and x.shape[1] == 1, f"expects (N, 1, B, H, W), got {tuple(x.shape)}"
        return x + self.up(torch.relu(self.down(x)))


class DeclaredConv3d(Conv3dDenoiser):
    """The same network declaring its layout and input multiple as class attributes."""

    hiralign_layout = "b1chw"
    input_multiple = 2


def make_sr(n_colors: int, upscale_factor: int, feats: int = 8) -> nn.Module:
    """An SR factory with the keyword names of other code bases (n_colors, upscale_factor)."""
    return nn.Sequential(nn.Conv2d(n_colors, feats * upscale_factor ** 2, 3, padding=1), nn.PixelShuffle(upscale_factor),
                         nn.Conv2d(feats, n_colors, 3, padding=1))


class MaskedFill(nn.Module):
    """A general-family network taking the mask of missing entries."""

    def __init__(self, bands: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * bands, bands, 3, padding=1)

    def forward(self, x, mask):
        return x * mask + self.conv(torch.cat([x, mask], 1)) * (1 - mask)


def plugged(name: str, **kw):
    return restorers.get(f"{HERE}:{name}", 6, "denoise-gaussian", **kw)


# ----------------------------------------------------------------------------- names and adapters


def test_a_file_path_names_a_factory_and_the_adapter_converts_layout_and_pads():
    torch.manual_seed(0)
    model = plugged("Conv3dDenoiser", channels=3, layout="b1chw", multiple=2)
    assert isinstance(model, Plugged) and model.net.down.out_channels == 3
    x = torch.rand(2, 6, 33, 31)  # odd sizes: padded to 34 x 32 and cropped back
    y = model(x)
    assert y.shape == x.shape
    padded = nn.functional.pad(x, (0, 1, 0, 1), mode="replicate")
    assert torch.allclose(y, model.net(padded[:, None])[:, 0, :, :33, :31], atol=1e-6)
    assert model.build_config["adapter"] == {"layout": "b1chw", "multiple": 2}
    assert model.build_config["cfg"] == {"channels": 3} and model.build_config["task"] == "denoise-gaussian"


def test_declared_attributes_choose_the_adapter_and_the_raw_network_fails_without_it():
    model = plugged("DeclaredConv3d")
    assert model.layout == "b1chw" and model.input_multiple == 2 and model.tile_align == 2
    assert model(torch.rand(1, 6, 9, 9)).shape == (1, 6, 9, 9)
    with pytest.raises(AssertionError, match="expects"):
        plugged("Conv3dDenoiser")(torch.rand(1, 6, 8, 8))  # bchw by default: the network sees 4-D


def test_sr_factory_gets_bands_and_scale_under_its_own_names():
    model = restorers.get(f"{HERE}:make_sr", 5, "sr-x4", feats=4)
    assert model(torch.rand(1, 5, 6, 7)).shape == (1, 5, 24, 28)
    assert model.build_config["scale"] == 4 and model.build_config["cfg"] == {"feats": 4}


def test_mask_reaches_only_networks_that_take_it():
    model = restorers.get(f"{HERE}:MaskedFill", 4, "inpaint")
    x, mask = torch.rand(1, 4, 8, 8), (torch.rand(1, 4, 8, 8) > 0.5).float()
    assert torch.equal(model(x, mask=mask) * mask, x * mask)
    assert plugged("Conv3dDenoiser", layout="b1chw", multiple=2)(torch.rand(1, 6, 8, 8), mask=mask[:, :1]).shape[1] == 6


@pytest.mark.parametrize("name, message", [
    ("tests/no_such_file.py:Net", "does not exist"),
    ("hiralign.no_such_module:Net", "cannot import"),
    (f"{HERE}:NoSuchNet", "has no attribute"),
    (f"{HERE}:HERE", "not callable"),
    ("not-registered-anywhere", "unknown backbone"),
])
def test_unresolvable_backbones_say_why(name, message):
    with pytest.raises(ValueError, match=message):
        restorers.get(name, 6, "denoise-gaussian")


def test_bad_adapter_options_and_factories_are_named():
    with pytest.raises(PluginError, match="unknown input layout"):
        plugged("Conv3dDenoiser", layout="bhwc")
    with pytest.raises(PluginError, match="failed"):
        plugged("Conv3dDenoiser", no_such_keyword=1)
    with pytest.raises(PluginError, match="scale keywords"):
        restorers.get(f"{HERE}:Conv3dDenoiser", 6, "sr-x4")


def test_an_entry_point_names_a_backbone(tmp_path, monkeypatch):
    dist = tmp_path / "my_nets-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-nets\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hiralign.backbones]\nmy-3d-net = my_nets:DeclaredNet\n")
    (tmp_path / "my_nets.py").write_text(textwrap.dedent("""
        from torch import nn
        class DeclaredNet(nn.Conv3d):
            hiralign_layout = "b1chw"
            def __init__(self):
                super().__init__(1, 1, 3, padding=1)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert restorers.plugins.entry_points()["my-3d-net"] == "my_nets:DeclaredNet"
    assert restorers.is_known("my-3d-net")
    model = restorers.get("my-3d-net", 6, "denoise-gaussian")
    assert model(torch.rand(1, 6, 5, 5)).shape == (1, 6, 5, 5)
    assert model.build_config["backbone"] == "my-3d-net" and model.build_config["factory"] == "my_nets:DeclaredNet"


# ----------------------------------------------------------------------------- train, save, reload anywhere


def cubes(n: int = 3, bands: int = 6, size: int = 18, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.2 + 0.6 * rng.random((bands, size, size))).astype(np.float32) for _ in range(n)]


def test_a_plugged_network_trains_saves_and_reloads_in_another_process(tmp_path):
    torch.manual_seed(0)
    model = plugged("Conv3dDenoiser", layout="b1chw", multiple=2)
    ckpt = tmp_path / "plugged.safetensors"
    config = TrainConfig(epochs=1, steps_per_epoch=3, batch_size=2, patch_size=12, seed=0)
    train(model, cubes(), "denoise-gaussian", config, checkpoint=ckpt, progress=False)
    stored = read_checkpoint_config(ckpt)
    assert stored["bands"] == 6 and stored["task"] == "denoise-gaussian" and stored["factory"].endswith(":Conv3dDenoiser")
    x = cubes(1, size=15, seed=1)[0]
    expected = restore(model, x)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np
        from hiralign.restorers.inference import restore
        from hiralign.train import load_checkpoint
        model = load_checkpoint({str(ckpt)!r}, bands=6, task="denoise-gaussian").model
        np.save({str(tmp_path / 'y.npy')!r}, restore(model, np.load({str(tmp_path / 'x.npy')!r})))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)  # another process, another cwd
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-6)


def test_a_module_built_outside_hiralign_records_bands_and_reloads_with_model(tmp_path):
    net = nn.Conv2d(6, 6, 3, padding=1)
    ckpt = tmp_path / "raw.safetensors"
    train(net, cubes(), "denoise-gaussian", TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=12),
          checkpoint=ckpt, progress=False)
    assert read_checkpoint_config(ckpt)["bands"] == 6
    with pytest.raises(CheckpointError, match="pass model="):
        load_checkpoint(ckpt, bands=6, task="denoise-gaussian")
    loaded = load_checkpoint(ckpt, bands=6, task="denoise-gaussian", model=nn.Conv2d(6, 6, 3, padding=1)).model
    assert torch.equal(loaded.weight, net.weight)


# ----------------------------------------------------------------------------- released checkpoints


def official(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


NESTINGS = {
    "bare": lambda sd: sd,
    "lightning": lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3,
                             "optimizer_states": [], "hyper_parameters": {"lr": 1e-3}},
    "net": lambda sd: {"net": sd, "epoch": 10},
    "dataparallel": lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    "basicsr": lambda sd: {"params": sd, "params_ema": sd},
}


@pytest.mark.parametrize("nesting", sorted(NESTINGS))
def test_released_pth_in_each_nesting_loads_with_an_exact_report(tmp_path, nesting):
    torch.manual_seed(1)
    reference = Conv3dDenoiser()
    path = tmp_path / f"{nesting}.pth"
    torch.save(NESTINGS[nesting](official(reference)), path)
    model = plugged("Conv3dDenoiser", layout="b1chw", multiple=2)
    report = load_released(model, path)
    assert report.ok and report.missing == [] and report.unexpected == [] and report.loaded == 4
    x = torch.rand(1, 6, 8, 8)
    assert torch.allclose(model(x), reference(x[:, None])[:, 0])


def test_a_mismatching_checkpoint_names_every_missing_unexpected_and_reshaped_key(tmp_path):
    state = official(Conv3dDenoiser())
    state["extra.weight"] = torch.zeros(2)
    state["down.weight"] = torch.zeros(5, 1, 3, 3, 3)
    del state["up.bias"]
    torch.save({"net": state}, tmp_path / "bad.pth")
    model = plugged("Conv3dDenoiser", layout="b1chw", multiple=2)
    before = official(model.net)
    with pytest.raises(CheckpointError) as err:
        load_released(model, tmp_path / "bad.pth")
    text = str(err.value)
    assert "missing: up.bias" in text and "unexpected: extra.weight" in text
    assert "other shape: down.weight: (5, 1, 3, 3, 3) vs (4, 1, 3, 3, 3)" in text
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())  # strict: nothing loaded
    report = load_released(model, tmp_path / "bad.pth", strict=False)
    assert report.loaded == 2 and not report.ok


def test_key_map_renames_modules(tmp_path):
    state = {k.replace("down.", "encoder.0."): v for k, v in official(Conv3dDenoiser()).items()}
    torch.save(state, tmp_path / "renamed.pt")
    model = plugged("Conv3dDenoiser", layout="b1chw", multiple=2)
    assert load_released(model, tmp_path / "renamed.pt", key_map={r"^encoder\.0\.": "down."}).ok


class Opaque:
    """A pickled object that is not a tensor container."""


def test_pickled_objects_truncated_and_tensorless_files_are_refused_by_name(tmp_path):
    torch.save({"net": official(Conv3dDenoiser()), "opaque": Opaque()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(tmp_path / "pickled.pth")
    torch.save(official(Conv3dDenoiser()), tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cut.pth"):
        read_state_dict(tmp_path / "cut.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no tensors found"):
        read_state_dict(tmp_path / "empty.pth")


def test_stage_one_converts_a_released_checkpoint_and_records_its_report(tmp_path):
    from hiralign.data import Cube

    torch.manual_seed(2)
    reference = DeclaredConv3d()
    torch.save({"state_dict": {f"model.{k}": v for k, v in official(reference).items()}}, tmp_path / "r.ckpt")
    train_cubes = [Cube(c, np.linspace(400, 700, 6)) for c in cubes()]
    with pytest.raises(CheckpointError, match="name its backbone"):
        source_model("denoise-gaussian", train_cubes, checkpoint=str(tmp_path / "r.ckpt"))
    out = tmp_path / "01_source.safetensors"
    source = source_model("denoise-gaussian", train_cubes, checkpoint=str(tmp_path / "r.ckpt"),
                          backbone=f"{HERE}:DeclaredConv3d", out=out)
    assert source.path == out and "0 missing, 0 unexpected" in source.config["released"]["report"]
    x = torch.rand(1, 6, 8, 8)
    assert torch.allclose(source.model(x), reference(x[:, None])[:, 0], atol=1e-6)
    assert load_checkpoint(out, bands=6, task="denoise-gaussian").config["released"]["sha256"]


# ----------------------------------------------------------------------------- the notebook chain


def test_a_plugged_5d_network_runs_the_notebook_chain_in_its_kernels(tmp_path):
    """pretrain -> proxies -> guides -> warp -> finetune -> evaluate through `hiralign run`: the
    notebook kernels resolve the backbone from its relative file path (the project root) and every
    later stage rebuilds it from the checkpoint's recorded factory."""
    import json

    import yaml

    from hiralign.cli import main
    from stage_helpers import NOTEBOOKS, TINY_STAGES

    stages = {name: dict(values) for name, values in TINY_STAGES.items()}
    stages["01_proxy"].update(backbone=f"{HERE}:Conv3dDenoiser", backbone_kwargs="{channels: 3, layout: b1chw, multiple: 2}",
                              pretrain_epochs=1)
    stages["04_finetune"]["compare"] = ""
    run_dir = tmp_path / "run"
    params = tmp_path / "plugged.yaml"
    params.write_text(yaml.safe_dump({"name": "plugged", "run_dir": str(run_dir), "device": "cpu", "seed": 0,
                                      "stages": stages}))
    assert main(["run", str(params), "--notebooks", str(NOTEBOOKS)]) == 0
    source = read_checkpoint_config(run_dir / "01_source_denoise-gaussian.safetensors")
    adapted = read_checkpoint_config(run_dir / "04_model.safetensors")
    for config in (source, adapted):
        assert config["backbone"] == f"{HERE}:Conv3dDenoiser" and config["factory"] == f"{REPO / HERE}:Conv3dDenoiser"
        assert config["adapter"] == {"layout": "b1chw", "multiple": 2} and config["cfg"] == {"channels": 3}
    metrics = json.dumps(json.loads((run_dir / "05_metrics.json").read_text()))
    assert "source-only" in metrics and "adapted" in metrics


def test_adapter_options_are_refused_for_registered_backbones():
    with pytest.raises(PluginError, match="registered"):
        restorers.get("spectral-cnn", 6, "denoise-gaussian", multiple=4)
