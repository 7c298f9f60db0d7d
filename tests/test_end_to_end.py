"""The main job end to end: every real notebook 00..05 through `hiralign run` on tiny parameters,
then a rerun that skips every stage and reprints the same table."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from hiralign.cli import main

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

TINY_STAGES = {
    "00_data": {"image_size": 32, "n_source_train": 2, "n_source_test": 1, "n_target_observed": 2, "n_target_unobserved": 2},
    "01_proxy": {"task": "denoise-gaussian", "baseline_iterations": 3},
    "02_rgb_guides": {"generator": "jitter", "n_guides": 2, "threads": 1},
    "03_warp": {"iters": 10, "threads": 1},
    "04_finetune": {"epochs": 1, "steps_per_epoch": 3, "batch": 2, "patch": 16, "compare": "proxy", "threads": 1},
    "05_evaluate": {"spectral_samples": 300, "crop": 16, "threads": 1},
}


def test_main_job_runs_every_stage_then_skips_them(tmp_path, capsys):
    params = tmp_path / "tiny.yaml"
    run_dir = tmp_path / "run"
    params.write_text(yaml.safe_dump({"name": "tiny", "run_dir": str(run_dir), "device": "cpu", "seed": 0, "stages": TINY_STAGES}))
    assert main(["run", str(params), "--notebooks", str(NOTEBOOKS)]) == 0
    first = capsys.readouterr().out
    for artifact in ("00_data.h5", "01_proxy.h5", "02_guides.h5", "03_warp.h5", "04_model.safetensors", "05_metrics.json"):
        assert (run_dir / artifact).exists(), artifact
    table = json.loads((run_dir / "05_metrics.json").read_text())
    text = json.dumps(table)
    for method in ("source-only", "adapted", "proxy-only"):
        assert method in text
    assert "unobserved" in text and "SYNTHETIC" in (run_dir / "05_metrics.md").read_text()
    assert "| adapted |" in first and str(run_dir / "notebooks") in first

    assert main(["run", str(params), "--notebooks", str(NOTEBOOKS)]) == 0
    second = capsys.readouterr().out
    assert second.count("up to date, skipped") == 6
    table_lines = [line for line in first.splitlines() if line.startswith("| ")]
    assert table_lines and all(line in second for line in table_lines)
