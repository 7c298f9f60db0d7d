"""Replicated runs (hiralign.replicates, ``hiralign run --replicates N``): derived seeds, the shared
data stage, and the statistics over replicates.

The chain runs on the stand-in notebooks of tests/test_pipeline.py; their stage 05 writes a
``05_metrics.json`` whose adapted PSNR is source-only + 1 dB on every image, while source-only itself
varies with the replicate's seed: every paired difference has a known answer (exactly 1 dB).
"""
from __future__ import annotations

import json

import pytest
import yaml

from hiralign.cli import main
from hiralign.pipeline import PipelineError, load_config
from hiralign.replicates import read_aggregate, replicate_config, replicate_dirs, replicate_seed
from hiralign.stages import STAGES
from hiralign.store import read_params
from stage_helpers import NOTEBOOKS, make_standin_notebooks

REPO = NOTEBOOKS.parent

IMAGES = 6

STANDIN_METRICS = f"""\
import json
import numpy as np
rng = np.random.default_rng(seed)
rows = []
for i in range({IMAGES}):
    split = "observed" if i < 3 else "unobserved"
    base = 30.0 + 0.1 * i + rng.normal()
    rows.append(["source-only", split, f"img{{i}}", base, 0.8, 5.0])
    rows.append(["adapted", split, f"img{{i}}", base + 1.0, 0.8, 4.0])
summary = {{"columns": ["method", "training", "split", "n", "psnr", "ssim", "sam"],
           "rows": [["source-only", "source checkpoint", "total", {IMAGES}, 30.0, 0.8, 5.0],
                    ["adapted", "HIR-ALIGN", "total", {IMAGES}, 31.0, 0.8, 4.0]]}}
per_image = {{"columns": ["method", "split", "image", "psnr", "ssim", "sam"], "rows": rows}}
payload = {{"provenance": {{"params": {{"seed": seed}}, "task": "denoise-gaussian", "dataset": {{"synthetic": True}}}},
           "tables": {{"summary": summary, "per_image": per_image}}}}
Path(run_dir, "05_metrics.json").write_text(json.dumps(payload))
"""


def test_replicate_seeds_keep_the_first_and_derive_the_others():
    seeds = [replicate_seed(7, k) for k in range(4)]
    assert seeds[0] == 7 and len(set(seeds)) == 4 and all(0 <= s < 2 ** 31 for s in seeds)
    assert seeds == [replicate_seed(7, k) for k in range(4)]  # deterministic
    assert replicate_seed(8, 1) != seeds[1]
    with pytest.raises(ValueError):
        replicate_seed(0, -1)


def test_replicate_config_reseeds_every_stage_but_the_data(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "run_dir": str(tmp_path / "run"), "seed": 3, "replicates": 2,
                                    "stages": {"04_finetune": {"seed": 11}}}))
    config = load_config(path)
    assert config.replicates == 2
    rep = replicate_config(config, 1, 2)
    assert rep.run_dir == tmp_path / "run" / "rep1"
    assert "seed" not in rep.stages["00_data"] and not STAGES["00_data"].replicated  # the data keep the file's seed
    assert rep.stages["01_proxy"]["seed"] == replicate_seed(3, 1) and rep.stages["04_finetune"]["seed"] == replicate_seed(11, 1)
    assert replicate_config(config, 0, 2).stages["01_proxy"]["seed"] == 3
    assert replicate_dirs(tmp_path / "run", 1) == [tmp_path / "run"]
    path.write_text(yaml.safe_dump({"name": "x", "replicates": 0}))
    with pytest.raises(PipelineError, match="replicates must be an integer >= 1"):
        load_config(path)


def test_run_with_replicates_shares_the_data_and_reports_paired_statistics(tmp_path, capsys):
    notebooks = make_standin_notebooks(tmp_path / "notebooks", extra={"05_evaluate": STANDIN_METRICS})
    run_dir = tmp_path / "runs" / "demo"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "demo", "run_dir": str(run_dir), "seed": 0, "replicates": 3}))
    assert main(["run", str(path), "--notebooks", str(notebooks)]) == 0
    printed = capsys.readouterr().out
    reps = [run_dir / f"rep{k}" for k in range(3)]
    seeds = [int(read_params(r / "01_proxy.h5")["seed"]) for r in reps]
    assert seeds == [replicate_seed(0, k) for k in range(3)] and len(set(seeds)) == 3  # the replicates differ
    assert {int(read_params(r / "00_data.h5")["seed"]) for r in reps} == {0}  # ... but share the data stage:
    assert (reps[0] / "log.txt").read_text().split()[0] == "00_data"
    for rep in reps[1:]:  # copied from the stage cache, never recomputed
        assert (rep / "log.txt").read_text().split()[0] == "01_proxy"
        assert (rep / "00_data.h5").read_bytes() == (reps[0] / "00_data.h5").read_bytes()
    assert yaml.safe_load((reps[2] / "params.yaml").read_text())["stages"]["05_evaluate"]["seed"] == seeds[2]
    tables = read_aggregate(run_dir)
    summary = {(r["method"], r["split"]): r for r in tables["summary"].records()}
    assert summary[("adapted", "total")]["replicates"] == 3 and summary[("adapted", "total")]["n"] == IMAGES
    assert summary[("adapted", "total")]["d_psnr"] == pytest.approx(1.0)
    paired = {(r["split"], r["metric"]): r for r in tables["paired"].records()}
    total = paired[("total", "psnr")]
    assert total["difference"] == pytest.approx(1.0) and total["replicates"] == 3 and total["n"] == IMAGES
    assert (total["difference_low"], total["difference_high"]) == pytest.approx((1.0, 1.0))
    assert (total["over_replicates_low"], total["over_replicates_high"]) == pytest.approx((1.0, 1.0))
    assert total["verdict"] == "better" and paired[("total", "sam")]["verdict"] == "better"
    assert paired[("observed", "psnr")]["verdict"] == "not distinguishable"  # 3 images: Wilcoxon cannot reach 0.05
    assert "adapted - source-only" in printed and "3 replicates" in printed
    prov = json.loads((run_dir / "replicates.json").read_text())["provenance"]
    assert [r["seed"] for r in prov["runs"]] == seeds
    before = (reps[1] / "05_metrics.json").stat().st_mtime_ns
    assert main(["run", str(path), "--notebooks", str(notebooks), "--replicates", "3"]) == 0  # resumes: nothing reruns
    assert (reps[1] / "05_metrics.json").stat().st_mtime_ns == before


def test_replicates_refuse_until(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "demo", "run_dir": str(tmp_path / "r")}))
    assert main(["run", str(path), "--replicates", "2", "--until", "03_warp"]) == 2


def test_the_real_target_profile_without_its_scenes_stops_at_once_naming_the_folder(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    first = REPO / "runs" / "cave-real" / "rep0" / "params.yaml"
    before = first.stat().st_mtime_ns if first.exists() else None
    status = main(["run", str(REPO / "params" / "cave-real.yaml"), "--set", f"00_data.dataset={missing}/cave_*.mat"])
    err = capsys.readouterr().err
    assert status == 2 and str(missing) in err and "<scene>_ms folders of 16-bit band PNGs, or .mat files" in err
    assert "nothing was run" in err and "params/cave-real.yaml" in err
    assert (first.stat().st_mtime_ns if first.exists() else None) == before  # no replicate folder was written


def test_the_real_target_profiles_are_replicated_real_cave_runs():
    for name, task in (("cave-real", "denoise-gaussian"), ("cave-real-sr", "sr-x4"), ("cave-real-uafl-sr", "sr-ref-x4")):
        config = load_config(REPO / "params" / f"{name}.yaml")
        assert config.replicates == 3 and config.stages["01_proxy"]["task"] == task
        assert config.stages["00_data"]["kind"] == "cave" and config.stages["00_data"]["split"] == "auto"
