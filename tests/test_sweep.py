"""Sweeps (hiralign.sweep, ``hiralign sweep``): planning, shared stages, statistics, result files.

The mechanics run on the six stand-in notebooks of tests/test_pipeline.py; their stage 05 writes a
``05_metrics.json`` whose adapted score is proxy-only + ``n_guides`` of stage 02 (the knob the
variants turn) + a seed-dependent offset, so every effect and interval has a known answer.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from hiralign.cli import main
from hiralign.statistics import t_interval
from hiralign.sweep import Measure, SweepError, aggregate, leaders_first, load_sweep, plan_runs, read_sweep_results, run_sweep
from stage_helpers import make_standin_notebooks

#: Seed offsets of the stand-in effect: known mean 0 and spread across seeds 0 and 1.
OFFSETS = (-0.01, 0.01)

STANDIN_METRICS = f"""\
import json
from hiralign.store import read_params
knob = int(read_params(Path(run_dir, "02_guides.h5"))["n_guides"])
offset = {OFFSETS!r}[int(read_params(Path(run_dir, "00_data.h5"))["seed"])]
rows = [["proxy-only", "", "unobserved", 2, 30.0, 0.9, 5.0], ["adapted", "", "unobserved", 2, 30.0 + knob + offset, 0.9, 5.0]]
quality = {{"columns": ["generator", "between_guides"], "rows": [["stand-in", knob / 10]]}}
payload = {{"provenance": {{}}, "tables": {{"summary": {{"columns": ["method", "training", "split", "n", "psnr", "ssim", "sam"],
                                                   "rows": rows}}, "stage2_quality": quality}}}}
Path(run_dir, "05_metrics.json").write_text(json.dumps(payload))
"""


@pytest.fixture
def sweep_file(tmp_path):
    notebooks = make_standin_notebooks(tmp_path / "notebooks", extra={"05_evaluate": STANDIN_METRICS})
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"name": "base", "run_dir": "unused", "seed": 0, "stages": {"03_warp": {"iters": 7}}}))
    sweep = {
        "name": "knob", "title": "stand-in", "base": "base.yaml", "seeds": [0, 1],
        "stages": {"02_rgb_guides": {"generator": "jitter"}},
        "targets": {"here": {"label": "stand-in target"},
                    "elsewhere": {"requires": ["no/such/folder"], "stages": {"00_data": {"dataset": "no/such/folder/x.mat"}}}},
        "variants": {"one": {"02_rgb_guides": {"n_guides": 1}}, "three": {"02_rgb_guides": {"n_guides": 3}}},
        "measure": {"x": "between_guides"},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path, notebooks, tmp_path


def test_plan_expands_targets_variants_seeds_and_layers_the_overrides(sweep_file):
    path, _, tmp = sweep_file
    runs = plan_runs(load_sweep(path), tmp / "runs")
    assert [r.name for r in runs][:3] == ["here/one/seed0", "here/one/seed1", "here/three/seed0"] and len(runs) == 8
    run = next(r for r in runs if r.name == "elsewhere/three/seed1")
    assert run.config["seed"] == 1 and run.run_dir == (tmp / "runs" / "knob" / "elsewhere" / "three" / "seed1").resolve()
    stages = run.config["stages"]
    assert stages["03_warp"] == {"iters": 7} and stages["02_rgb_guides"] == {"generator": "jitter", "n_guides": 3}
    assert stages["00_data"]["dataset"].startswith("/")  # a required path reaches the notebooks absolute
    phases = leaders_first(runs)
    assert [r.name for r in phases[0]] == [f"{t}/one/seed{s}" for t in ("here", "elsewhere") for s in range(2)]


def test_sweep_runs_shares_stages_skips_missing_targets_and_writes_known_effects(sweep_file):
    path, notebooks, tmp = sweep_file
    messages: list[str] = []
    paths = run_sweep(path, runs_root=tmp / "runs", results_dir=tmp / "results", notebooks_dir=notebooks, log=messages.append)
    assert any("target elsewhere skipped: missing" in m and "no/such/folder" in m for m in messages)
    root = tmp / "runs" / "knob" / "here"
    # the second variant of a seed copied 00 and 01 from the stage cache instead of running them
    assert (root / "three" / "seed1" / "log.txt").read_text().split()[:1] == ["02_rgb_guides"]
    result = json.loads(paths["json"].read_text())
    effects = [dict(zip(result["tables"]["effects"]["columns"], r)) for r in result["tables"]["effects"]["rows"]]
    assert [(e["variant"], e["seeds"]) for e in effects] == [("one", 2), ("three", 2)]
    for e, knob in zip(effects, (1, 3)):
        interval = t_interval([knob + o for o in OFFSETS])
        assert e["effect"] == pytest.approx(knob) and (e["ci_low"], e["ci_high"]) == pytest.approx((interval.low, interval.high))
        assert e["between_guides"] == pytest.approx(knob / 10) and e["verdict"] == "better"
    assert paths["png"].stat().st_size > 1000 and "skipped_targets" in result["provenance"]
    rows, measure, title = read_sweep_results(paths["json"])  # what notebook 05 plots
    assert rows == effects and measure == Measure(x="between_guides") and title == "stand-in"
    assert "| here | three | 2 |" in paths["md"].read_text()
    before = (root / "one" / "seed0" / "05_metrics.json").stat().st_mtime_ns
    run_sweep(path, runs_root=tmp / "runs", results_dir=tmp / "results", notebooks_dir=notebooks, log=lambda m: None)
    assert (root / "one" / "seed0" / "05_metrics.json").stat().st_mtime_ns == before  # resumed: nothing reran


def test_sweep_aggregate_reports_the_seed_interval_and_verdict():
    rows = aggregate([{"target": "t", "variant": "v", "seed": s, "adapted": 31.0 + s, "proxy-only": 30.0 + s, "effect": 1.0,
                       "between_guides": 0.5} for s in range(3)], Measure())
    assert rows[0]["effect"] == 1.0 and rows[0]["ci_low"] == rows[0]["ci_high"] == 1.0 and rows[0]["adapted"] == 32.0
    assert rows[0]["verdict"] == "better"
    one = aggregate([{"target": "t", "variant": "v", "seed": 0, "adapted": 31.0, "proxy-only": 30.0, "effect": 1.0,
                      "between_guides": 0.5}], Measure())
    assert one[0]["verdict"] == "single run" and np.isnan(one[0]["ci_low"])


def test_bad_sweep_files_are_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "base": "missing.yaml", "seeds": [0], "targets": {"a": {}}, "variants": {"v": {}}}))
    with pytest.raises(SweepError, match="missing.yaml does not exist"):
        load_sweep(bad)
    bad.write_text(yaml.safe_dump({"name": "x", "seeds": [0], "targets": {"a": {}}, "variants": {"v": {}}, "colour": 1}))
    with pytest.raises(SweepError, match="unknown key"):
        load_sweep(bad)
    assert main(["sweep", str(tmp_path / "none.yaml")]) == 2


def test_the_committed_sweep_resolves_to_parameters_the_notebooks_declare(tmp_path, capsys):
    assert main(["sweep", "params/sweeps/guide-diversity.yaml", "--dry-run", "--runs-root", str(tmp_path)]) == 0
    sweep = load_sweep("params/sweeps/guide-diversity.yaml")
    assert {v["02_rgb_guides"]["generator"] for v in sweep.variants.values()} == {"local-ddpm", "jitter", "recompose"}
    assert len(sweep.seeds) >= 3 and sweep.measure.baseline == "proxy-only"
