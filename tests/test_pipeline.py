"""The notebook pipeline: ordering, skipping of current stages, downstream reruns, failure reporting.

Uses six tiny stand-in notebooks (one per stage) that write their artifact and append to a log, so
the mechanism is tested in seconds; the real chain is exercised by tests/test_end_to_end.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from hiralign.pipeline import STAGES, PipelineError, load_config, run_pipeline

WRITE = STAGES  # the artifact each stand-in notebook writes is the one the pipeline checks for


def make_notebook(folder: Path, stage: str) -> None:
    params = nbformat.v4.new_code_cell('run_dir: str = "."  # run folder\nvalue: int = 0  # a stage parameter\nfail: bool = False  # raise')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "from pathlib import Path\n"
        "if fail:\n    raise RuntimeError('stage exploded on purpose')\n"
        f"Path(run_dir, '{WRITE[stage]}').write_text(str(value))\n"
        f"with open(Path(run_dir, 'log.txt'), 'a') as f: f.write('{stage}\\n')\n"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {stage}"), params, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / f"{stage}.ipynb")


@pytest.fixture
def setup(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for stage in STAGES:
        make_notebook(nbdir, stage)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "run_dir": str(tmp_path / "run"), "stages": {"03_warp": {"value": 1}}}))
    return nbdir, cfg, tmp_path / "run"


def ran(run_dir: Path) -> list[str]:
    log = run_dir / "log.txt"
    return log.read_text().split() if log.exists() else []


def test_runs_in_order_then_skips_then_reruns_downstream(setup):
    nbdir, cfg, run_dir = setup
    messages: list[str] = []
    run_pipeline(load_config(cfg), nbdir, log=messages.append)
    assert ran(run_dir) == list(STAGES)
    assert (run_dir / "notebooks" / "03_warp.ipynb").exists()
    assert (run_dir / "03_warp.h5").read_text() == "1"

    (run_dir / "log.txt").unlink()
    messages.clear()
    run_pipeline(load_config(cfg), nbdir, log=messages.append)
    assert ran(run_dir) == [] and all("skipped" in m for m in messages)

    run_pipeline(load_config(cfg, overrides={"03_warp": {"value": 2}}), nbdir, log=messages.append)
    assert ran(run_dir) == ["03_warp", "04_finetune", "05_evaluate"]
    assert (run_dir / "03_warp.h5").read_text() == "2"


def test_failing_stage_names_notebook_and_error_and_keeps_earlier_artifacts(setup):
    nbdir, cfg, run_dir = setup
    run_pipeline(load_config(cfg), nbdir, log=lambda m: None)
    with pytest.raises(PipelineError) as err:
        run_pipeline(load_config(cfg, overrides={"02_rgb_guides": {"fail": True}}), nbdir, log=lambda m: None)
    msg = str(err.value)
    assert "02_rgb_guides" in msg and "RuntimeError: stage exploded on purpose" in msg
    assert str(run_dir / "notebooks" / "02_rgb_guides.ipynb") in msg
    for stage in ("00_data", "01_proxy"):
        assert (run_dir / WRITE[stage]).exists()
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert "02_rgb_guides" not in state and "01_proxy" in state


def test_unknown_parameter_or_stage_is_a_clear_error(setup, tmp_path):
    nbdir, cfg, _ = setup
    with pytest.raises(PipelineError, match=r"03_warp has no parameter\(s\) \['kk'\]"):
        run_pipeline(load_config(cfg, overrides={"03_warp": {"kk": 3}}), nbdir, log=lambda m: None)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"stages": {"07_nope": {}}}))
    with pytest.raises(PipelineError, match="unknown stage"):
        load_config(bad)


def test_stage_cache_serves_identical_upstream_stages_to_another_run(setup, tmp_path):
    nbdir, cfg, run_dir = setup
    cache = tmp_path / "cache"
    run_pipeline(load_config(cfg), nbdir, log=lambda m: None, cache_dir=cache)
    other = tmp_path / "p2.yaml"
    other.write_text(yaml.safe_dump({"name": "t2", "run_dir": str(tmp_path / "run2"), "stages": {"03_warp": {"value": 5}}}))
    messages: list[str] = []
    run_pipeline(load_config(other), nbdir, log=messages.append, cache_dir=cache)
    run2 = tmp_path / "run2"
    assert ran(run2) == ["03_warp", "04_finetune", "05_evaluate"]  # 00..02 came from the cache
    assert sum("stage cache" in m for m in messages) == 3
    assert (run2 / "02_guides.h5").exists() and (run2 / "notebooks" / "01_proxy.ipynb").exists()
    assert (run2 / "03_warp.h5").read_text() == "5"


def test_stage_cache_carries_every_file_a_stage_writes(tmp_path):
    from hiralign.pipeline import cache_fetch, cache_store

    run, other, cache = tmp_path / "a", tmp_path / "b", tmp_path / "cache"
    for d in (run / "notebooks", other / "notebooks"):
        d.mkdir(parents=True)
    for name in ("04_model.safetensors", "04_model_proxy-only.safetensors", "04_finetune.h5"):
        (run / name).write_text(name)
    (run / "05_metrics.json").write_text("not this stage")
    cache_store(cache, "04_finetune", "fp", run)
    assert cache_fetch(cache, "04_finetune", "fp", other)
    assert sorted(p.name for p in other.iterdir() if p.is_file()) == [
        "04_finetune.h5", "04_model.safetensors", "04_model_proxy-only.safetensors"]
