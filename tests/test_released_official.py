"""Released checkpoints of the official code bases load into our faithful networks, named as registered
backbones (QRNN3D, T3SC) or by import path (MCNet), with a report of 0 missing / 0 unexpected keys.

The files are written here the way each code base saves them, from the HSIR reference networks
(``tests/hsir_reference.py``) at tiny sizes:

* QRNN3D and HSIR's trainer (``hsir/trainer.py``, the QRNN3D engine's layout):
  ``{'net': state_dict, 'optimizer': ..., 'epoch': ..., 'iteration': ...}`` in a ``.pth``;
* T3SC (PyTorch Lightning): ``{'state_dict': ..., 'epoch', 'global_step', 'pytorch-lightning_version',
  'optimizer_states', 'lr_schedulers', 'callbacks'}`` in a ``.ckpt``;
* MCNet (qianngli/MCNet ``train.py``) pickles the whole model, ``{'epoch': e, 'model': model}``,
  which ``weights_only`` loading refuses with a message on how to re-save it; re-saved as
  ``{'model': state_dict}`` (``model.state_dict()`` in place of the module) it loads.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hiralign import restorers
from hiralign.restorers import mcnet, qrnn3d, t3sc
from hiralign.train import CheckpointError, load_released
from hsir_reference import hsir_model

BANDS = 6


def same_tensors(ours: nn.Module, reference: nn.Module) -> bool:
    theirs = reference.state_dict()
    return all(torch.equal(v, theirs[k]) for k, v in ours.state_dict().items())


def optimizer_state(net: nn.Module) -> dict:
    return torch.optim.Adam(net.parameters(), lr=1e-3).state_dict()


def test_qrnn3d_engine_checkpoint_loads_with_an_exact_report(tmp_path):
    torch.manual_seed(0)
    reference = hsir_model("qrnn3d").QRNNREDC3D(1, 4, 5, [1, 3], has_ad=True)
    path = tmp_path / "model_epoch_50.pth"
    torch.save({"net": reference.state_dict(), "optimizer": optimizer_state(reference), "epoch": 50,
                "iteration": 12_345}, path)
    model = restorers.get("qrnn3d", BANDS, "denoise-gaussian", size="tiny")
    assert model.build_config["cfg"] == qrnn3d.TINY_CONFIG
    report = load_released(model, path)
    assert report.ok and report.nesting == "['net']" and report.loaded == len(reference.state_dict())
    assert same_tensors(model.net, reference)
    x = torch.rand(1, BANDS, 13, 13)  # not a multiple of 4: the adapter pads
    with torch.no_grad():
        padded = nn.functional.pad(x, (0, 3, 0, 3), mode="replicate")
        expected = reference.eval()(padded[:, None])[:, 0, :, :13, :13]
        assert torch.allclose(model.eval()(x), expected, atol=1e-5)


def test_t3sc_lightning_checkpoint_loads_with_an_exact_report(tmp_path):
    torch.manual_seed(0)
    layers = {f"l{i}": {"name": "LowRankSCLayer", "params": dict(p)} for i, p in enumerate(t3sc.TINY_CONFIG["layers"])}
    reference = hsir_model("t3sc").MultilayerModel(channels=BANDS, layers=layers)
    path = tmp_path / "epoch=12-step=3000.ckpt"
    torch.save({"epoch": 12, "global_step": 3000, "pytorch-lightning_version": "1.5.10",
                "state_dict": reference.state_dict(), "optimizer_states": [optimizer_state(reference)],
                "lr_schedulers": [], "callbacks": {}}, path)
    model = restorers.get("t3sc", BANDS, "denoise-gaussian", size="tiny")
    report = load_released(model, path)
    assert report.ok and report.nesting == "['state_dict']" and not report.missing and not report.unexpected
    assert same_tensors(model.net, reference)


def mcnet_reference(tmp_path, scale: int = 4) -> nn.Module:
    stats = np.zeros((), dtype=[("data_mean", "<f4", (BANDS,))])
    np.save(tmp_path / "stats.npy", stats)
    torch.manual_seed(0)
    return hsir_model("sr.mcnet").MCNet(n_colors=BANDS, upscale_factor=scale, stat_path=str(tmp_path / "stats.npy"),
                                        **mcnet.TINY_CONFIG)


def test_mcnet_pickled_model_is_refused_and_its_state_dict_loads(tmp_path):
    reference = mcnet_reference(tmp_path)
    pickled = tmp_path / "model_epoch_100.pth"
    torch.save({"epoch": 100, "model": nn.Conv2d(BANDS, BANDS, 3)}, pickled)  # a whole module pickled, as MCNet's train.py does
    model = restorers.get("hiralign.restorers.mcnet:build", BANDS, "sr-x4", **mcnet.TINY_CONFIG)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_released(model, pickled)
    resaved = tmp_path / "model_epoch_100_weights.pth"
    torch.save({"epoch": 100, "model": reference.state_dict()}, resaved)
    report = load_released(model, resaved)
    assert report.ok and report.nesting == "['model']"
    assert same_tensors(model.net, reference)
