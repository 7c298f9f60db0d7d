"""The notebook pipeline: ordering, skipping of current stages, downstream reruns, failure reporting,
fail-fast validation of every stage's parameters.

Uses six stand-in notebooks (the real title and parameters cells, a body that writes a tiny record
through the stage protocol), so the mechanism is tested in seconds; the real chain is exercised by
tests/test_end_to_end.py.
"""
from __future__ import annotations

import json

import pytest
import yaml

from hiralign.pipeline import PipelineError, load_config, run_pipeline
from hiralign.stages import STAGES, RunLock, Stage, status
from hiralign.store import read_params
from stage_helpers import make_standin_notebooks, tiny_params


@pytest.fixture
def setup(tmp_path):
    nbdir = make_standin_notebooks(tmp_path / "notebooks")
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "run_dir": str(tmp_path / "run"), "stages": {"03_warp": {"iters": 11}}}))
    return nbdir, cfg, tmp_path / "run"


def ran(run_dir):
    log = run_dir / "log.txt"
    return log.read_text().split() if log.exists() else []


def test_runs_in_order_then_skips_then_reruns_downstream(setup):
    nbdir, cfg, run_dir = setup
    messages: list[str] = []
    run_pipeline(load_config(cfg), nbdir, log=messages.append)
    assert ran(run_dir) == list(STAGES)
    assert (run_dir / "notebooks" / "03_warp.ipynb").exists()
    assert read_params(run_dir / "03_warp.h5")["iters"] == 11

    (run_dir / "log.txt").unlink()
    messages.clear()
    run_pipeline(load_config(cfg), nbdir, log=messages.append)
    assert ran(run_dir) == [] and all("skipped" in m for m in messages)

    run_pipeline(load_config(cfg, overrides={"03_warp": {"iters": 12}}), nbdir, log=messages.append)
    assert ran(run_dir) == ["03_warp", "04_finetune", "05_evaluate"]
    log = json.loads((run_dir / "pipeline.json").read_text())
    assert log["02_rgb_guides"]["did"] == "skipped" and log["03_warp"]["did"] == "ran"


def test_failing_stage_names_notebook_and_error_and_keeps_earlier_artifacts(setup):
    nbdir, cfg, run_dir = setup
    run_pipeline(load_config(cfg), nbdir, log=lambda m: None)
    (run_dir / "FAIL").write_text("02_rgb_guides")
    with pytest.raises(PipelineError) as err:
        run_pipeline(load_config(cfg, overrides={"02_rgb_guides": {"n_guides": 2}}), nbdir, log=lambda m: None)
    msg = str(err.value)
    assert "02_rgb_guides" in msg and "RuntimeError: stage exploded on purpose" in msg
    assert str(run_dir / "notebooks" / "02_rgb_guides.ipynb") in msg
    for stage in ("00_data", "01_proxy"):
        assert (run_dir / STAGES[stage].record_file).exists()
    with RunLock(run_dir):  # the lock was released on failure: taking it does not wait
        pass


def test_unknown_stage_or_parameter_is_reported(setup, tmp_path):
    nbdir, _, _ = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"stages": {"07_nothing": {}}}))
    with pytest.raises(PipelineError, match="unknown stage"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "r"), "stages": {"02_rgb_guides": {"nope": 1}}}))
    with pytest.raises(PipelineError, match=r"02_rgb_guides has no parameter\(s\) \['nope'\]"):
        run_pipeline(load_config(bad), nbdir, log=lambda m: None)


def test_a_typo_in_a_late_stage_fails_before_any_stage_runs(setup, tmp_path):
    """Issue 19, case 3: `kk: 3` in stage 03 used to run 00, 01 and 02 (minutes) first."""
    nbdir, _, _ = setup
    run_dir = tmp_path / "typo"
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump({"run_dir": str(run_dir), "stages": {"03_warp": {"kk": 3}, "05_evaluate": {"k": 0}}}))
    with pytest.raises(PipelineError) as err:
        run_pipeline(load_config(bad), nbdir, log=lambda m: None)
    assert "nothing was run" in str(err.value) and "['kk']" in str(err.value) and "05_evaluate: k must be >= 1" in str(err.value)
    assert ran(run_dir) == [] and not list(run_dir.glob("*.h5"))


def test_a_record_made_by_hand_with_other_parameters_is_rerun(setup):
    """Issue 19, case 2: a notebook run by hand with other parameters is never taken for current."""
    nbdir, cfg, run_dir = setup
    run_pipeline(load_config(cfg), nbdir, log=lambda m: None)
    params = dict(load_config(cfg).stages["03_warp"])
    by_hand = {**tiny_params("03_warp"), "iters": 20}
    stage = Stage("03_warp", run_dir, by_hand)
    for up in ("01_proxy", "02_rgb_guides"):
        stage.depends_on(up)
    stage.write({"params": "made in JupyterLab"})
    assert not status(run_dir, "03_warp", {**tiny_params("03_warp"), **params}).current
    downstream = status(run_dir, "04_finetune", read_params(run_dir / "04_finetune.h5"))
    assert not downstream.current and "upstream 03_warp changed" in downstream.reason
    (run_dir / "log.txt").unlink()
    messages: list[str] = []
    run_pipeline(load_config(cfg), nbdir, log=messages.append)
    assert any("03_warp" in m and "iters: 20 -> 11" in m for m in messages)
    # the rerun restores exactly the 03_warp content 04 and 05 were made from: they are current again
    assert ran(run_dir) == ["03_warp"]
