"""The console script: data summaries, benchmark dispatch, run errors, --set parsing; public API imports."""
from __future__ import annotations

import subprocess
import sys

import pytest

from hiralign.cli import _parse_set, main


def test_public_api_names_exist():
    out = subprocess.run(
        [sys.executable, "-c", "import hiralign.metrics as m, hiralign.degrade as d, hiralign.spectral as s, hiralign.warp as w;"
         "print(all(callable(f) for f in (m.psnr, m.ssim, m.sam, d.apply, s.to_rgb, w.spectral_warp)))"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "True"


def test_data_command_prints_cube_summary(cave_path, capsys):
    assert main(["data", str(cave_path)]) == 0
    assert "shape=(31, 256, 256)" in capsys.readouterr().out


def test_set_overrides_are_parsed_as_yaml_scalars():
    assert _parse_set(["03_warp.k=8", "04_finetune.composition=mixed", "03_warp.lr=0.1"]) == {
        "03_warp": {"k": 8, "lr": 0.1}, "04_finetune": {"composition": "mixed"}
    }
    with pytest.raises(SystemExit, match="STAGE.PARAM=VALUE"):
        _parse_set(["k=8"])


def test_run_with_missing_params_file_fails_cleanly(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_unknown_benchmark_lists_available(capsys):
    assert main(["bench", "no-such-bench"]) == 2
    assert "available" in capsys.readouterr().err
