"""The console script: data summaries, benchmark dispatch, run errors, --set parsing; public API imports;
user errors in one or two lines with exit status 2, tracebacks only with --debug or for bugs."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from hiralign import cli
from hiralign.cli import main
from hiralign.cli.run import parse_set
from hiralign.errors import UserError
from hiralign.reproduce import ReproduceError


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
    assert parse_set(["03_warp.k=8", "04_finetune.composition=mixed", "03_warp.lr=0.1"]) == {
        "03_warp": {"k": 8, "lr": 0.1}, "04_finetune": {"composition": "mixed"}
    }
    with pytest.raises(UserError, match="STAGE.PARAM=VALUE"):
        parse_set(["k=8"])


def test_bad_set_override_is_a_user_error(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--set", "k=8"]) == 2
    assert capsys.readouterr().err.strip() == "hiralign run: --set expects STAGE.PARAM=VALUE, got 'k=8'"


def test_run_dir_option_writes_into_that_folder_instead_of_the_files(tmp_path, capsys):
    import yaml
    from stage_helpers import make_standin_notebooks

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    make_standin_notebooks(notebooks)
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"name": "p", "run_dir": str(tmp_path / "from-file"), "device": "cpu", "seed": 0,
                                      "stages": {"02_rgb_guides": {"generator": "jitter"}}}))
    other = tmp_path / "variant"
    assert main(["run", str(params), "--notebooks", str(notebooks), "--run-dir", str(other),
                 "--set", "02_rgb_guides.generator=ubf", "--until", "02_rgb_guides"]) == 0
    assert (other / "02_guides.h5").exists()
    assert not (tmp_path / "from-file").exists()
    assert str(other / "notebooks") in capsys.readouterr().out


def test_run_with_missing_params_file_fails_cleanly(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hiralign run: ") and "does not exist" in err


def test_unknown_benchmark_lists_available(capsys):
    assert main(["bench", "no-such-bench"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hiralign bench: no benchmark 'no-such-bench'") and "available" in err


# ----------------------------------------------------------------------------- user errors vs bugs


@pytest.fixture
def nan_mat(tmp_path):
    cube = np.random.default_rng(0).random((8, 8, 5)).astype(np.float32)
    cube[2, 3, 1] = np.nan
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, {"cube": cube, "wavelengths": np.arange(400.0, 450.0, 10.0)})
    return path


def hiralign(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hiralign.cli", *args], capture_output=True, text=True)


def test_data_on_a_cube_with_nan_prints_one_line_and_exits_2(nan_mat):
    out = hiralign("data", str(nan_mat))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "Traceback" not in out.stderr
    assert lines[0].startswith("hiralign data: ") and "bad.mat" in lines[0] and "NaN" in lines[0]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(nan_mat, where):
    args = ["--debug", "data", str(nan_mat)] if where == "before" else ["data", str(nan_mat), "--debug"]
    out = hiralign(*args)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "CubeError" in out.stderr


def test_debug_reraises_user_errors_in_process(nan_mat, capsys):
    with pytest.raises(UserError, match="NaN"):
        main(["--debug", "data", str(nan_mat)])
    with pytest.raises(ReproduceError, match="unknown table"):
        main(["--debug", "reproduce", "tableXX"])
    assert main(["reproduce", "tableXX"]) == 2
    assert capsys.readouterr().err.startswith("hiralign reproduce: unknown table 'tableXX'")


def test_a_genuine_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(cli.data, "handle", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["data", "whatever.mat"])


def test_unknown_dataset_kind_is_a_user_error(nan_mat, capsys):
    assert main(["data", str(nan_mat), "--kind", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset kind 'bogus'; known: cave, icvl, kaist, hsidwrd, generic" in err


def test_only_the_cli_package_parses_arguments():
    from pathlib import Path

    import hiralign

    root = Path(hiralign.__file__).parent
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if "import argparse" in p.read_text() and p.parent.name != "cli")
    assert users == []
