"""The main job end to end: every real notebook 00..05 through `hiralign run` on tiny parameters,
then a rerun that skips every stage and reprints the same table."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from hiralign.cli import main
from stage_helpers import TINY_STAGES

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


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
