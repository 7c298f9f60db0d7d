"""The stage contract, tested once for every stage (as diffusers' PipelineTesterMixin does for its
pipelines): currentness, staleness that names what changed, missing upstream, corrupt and truncated
records, tampered side files, a SIGKILL at the worst moments of each stage, two writers on one run
folder, and the cases of issue 19 that used to serve stale results.

Every fault test also checks that no data was lost: the records the fault did not touch keep their
digests, and a rerun resumes from the last complete stage.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from hiralign.stages import (STAGES, MissingUpstreamError, RunLock, RunLockedError, recorded_parameters,
                             run_stage, status)
from hiralign.store import ArtifactError, read_artifact, read_header
from stage_helpers import make_run, tiny_params

REPO = Path(__file__).resolve().parents[1]
WITH_UPSTREAM = [s for s in STAGES if STAGES[s].upstream]
SIDE_FILES = {"04_finetune": "04_model.safetensors", "05_evaluate": "05_metrics.json"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A complete tiny run (00..05) made through the stage protocol, copied by each test."""
    run = tmp_path_factory.mktemp("chain") / "run"
    make_run(run)
    return run


@pytest.fixture
def run(chain, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(chain, copy)
    return copy


def digests(run: Path) -> dict[str, str]:
    return {s: read_header(run / STAGES[s].record_file).digest for s in STAGES if (run / STAGES[s].record_file).exists()}


def quiet(_: str) -> None:
    pass


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def upto(stage: str) -> list[str]:
    names = list(STAGES)
    return names[: names.index(stage) + 1]


# ----------------------------------------------------------------------------- the rule, per stage


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_fresh_record_is_current_and_records_its_inputs(chain, stage):
    state = status(chain, stage, tiny_params(stage))
    assert state.current, state.reason
    header = read_header(chain / STAGES[stage].record_file)
    assert header.params == recorded_parameters(tiny_params(stage))
    assert set(STAGES[stage].upstream) <= set(header.upstream)
    for name, entry in header.upstream.items():
        if name in STAGES:
            assert entry["digest"] == read_header(chain / STAGES[name].record_file).digest
    assert '"hiralign"' in header.code_version


@pytest.mark.parametrize("stage", list(STAGES))
def test_another_parameter_makes_it_stale_naming_the_parameter(chain, stage):
    params = tiny_params(stage, seed=7)
    state = status(chain, stage, params)
    assert not state.current and "seed: 0 -> 7" in state.reason


@pytest.mark.parametrize("stage", WITH_UPSTREAM)
def test_a_changed_upstream_makes_it_stale_naming_the_upstream(run, stage):
    upstream = STAGES[stage].upstream[-1]
    path = run / STAGES[upstream].record_file
    art = read_artifact(path)
    from hiralign.store import write_artifact

    write_artifact(path, {**art.data, "extra": np.ones(1)}, art.params, stage=upstream, attrs=art.attrs,
                   upstream=art.header.upstream, files=art.header.files)
    state = status(run, stage, tiny_params(stage))
    assert not state.current and f"upstream {upstream} changed" in state.reason


@pytest.mark.parametrize("stage", WITH_UPSTREAM)
def test_a_missing_upstream_is_an_error_naming_its_notebook(run, stage):
    upstream = STAGES[stage].upstream[0]
    (run / STAGES[upstream].record_file).unlink()
    (run / STAGES[stage].record_file).unlink()
    with pytest.raises(MissingUpstreamError, match=rf"{STAGES[upstream].record_file} is missing; run notebooks/{upstream}\.ipynb"):
        run_stage(stage, run, tiny_params(stage), log=quiet)


def first_dataset(group):
    import h5py

    for item in group.values():
        numeric = isinstance(item, h5py.Dataset) and item.size and item.dtype.kind in "iuf"
        found = item if numeric else (first_dataset(item) if isinstance(item, h5py.Group) else None)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "bitrot"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_damaged_record_is_never_served_and_is_recomputed(run, stage, damage):
    path = run / STAGES[stage].record_file
    before = digests(run)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "corrupt":  # garbage over the middle half of the file
        lo, hi = len(raw) // 4, 3 * len(raw) // 4
        raw[lo:hi] = bytes(b ^ 0xFF for b in raw[lo:hi])
        path.write_bytes(raw)
    else:  # one stored value changes, the file stays well-formed HDF5: only the digest can tell
        import h5py

        with h5py.File(path, "r+") as f:
            data = first_dataset(f)
            values = data[()]
            flat = np.array(values).reshape(-1)
            flat[0] = flat[0] + 1
            data[...] = flat.reshape(np.shape(values))
    state = status(run, stage, tiny_params(stage))
    assert not state.current and "corrupt" in state.reason
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        read_artifact(path)
    run_stage(stage, run, tiny_params(stage), log=quiet)
    assert status(run, stage, tiny_params(stage)).current
    assert without(digests(run), stage) == without(before, stage)  # every other record untouched: nothing lost


@pytest.mark.parametrize("stage", list(SIDE_FILES))
def test_a_tampered_or_missing_side_file_makes_the_record_stale(run, stage):
    side = run / SIDE_FILES[stage]
    side.write_bytes(side.read_bytes() + b" ")
    assert "changed since" in status(run, stage, tiny_params(stage)).reason
    side.unlink()
    assert "is missing" in status(run, stage, tiny_params(stage)).reason
    run_stage(stage, run, tiny_params(stage), log=quiet)
    assert status(run, stage, tiny_params(stage)).current


# ----------------------------------------------------------------------------- issue 19, cases 1 and 7


def test_stepping_through_notebooks_by_hand_never_serves_a_stale_warp(run):
    """Case 1: 02 rerun with n_guides=1, then 03 with its defaults: 03 must recompute, not skip."""
    run_stage("02_rgb_guides", run, tiny_params("02_rgb_guides", n_guides=1), log=quiet)
    messages: list[str] = []
    warp = run_stage("03_warp", run, tiny_params("03_warp"), log=messages.append)
    assert any("upstream 02_rgb_guides changed" in m for m in messages)
    assert warp["hsi"].shape[1] == 1 == read_artifact(run / "02_guides.h5")["guides"].shape[1]
    finetune = status(run, "04_finetune", tiny_params("04_finetune"))
    assert not finetune.current and "upstream 03_warp changed" in finetune.reason


def test_demo_records_are_refused_downstream(run):
    """Case 6: demo inputs only when asked for, and a demo record never feeds the real chain."""
    run_stage("03_warp", run, tiny_params("03_warp", demo=True, image_size=24, iters=2), log=quiet)
    with pytest.raises(ArtifactError, match="DEMO pair"):
        run_stage("04_finetune", run, tiny_params("04_finetune"), log=quiet, force=True)


def test_a_reloaded_record_shows_what_a_fresh_one_does(run):
    """Case 7: the 00 record round-trips cube names, wavelengths and metadata (the illuminant titles)."""
    fresh = run_stage("00_data", run, tiny_params("00_data"), log=quiet, force=True)
    loaded = run_stage("00_data", run, tiny_params("00_data"), log=quiet)
    for a, b in zip(fresh.target_observed + fresh.source_train, loaded.target_observed + loaded.source_train):
        assert a.name == b.name and a.meta == b.meta and a.meta.get("illuminant")
        np.testing.assert_array_equal(a.wavelengths, b.wavelengths)


@pytest.mark.parametrize("stage", [s for s in STAGES if STAGES[s].schema > 1])
def test_a_record_of_an_older_layout_is_stale_and_recomputed(run, stage):
    """A record written before its stage's layout changed is recomputed, never loaded half-understood."""
    path = run / STAGES[stage].record_file
    art = read_artifact(path)
    from hiralign.store import write_artifact

    write_artifact(path, art.data, art.params, stage=stage, attrs={**art.attrs, "schema": STAGES[stage].schema - 1},
                   upstream=art.header.upstream, files=art.header.files)
    state = status(run, stage, tiny_params(stage))
    assert not state.current and f"record layout v{STAGES[stage].schema - 1}; this code writes v{STAGES[stage].schema}" in state.reason
    run_stage(stage, run, tiny_params(stage), log=quiet)
    assert status(run, stage, tiny_params(stage)).current


def test_the_evaluation_reports_stage2_quality_and_reloads_its_figure_data(run):
    """05 reads the guides' quality (02) and the synthesized HSIs' plausibility (03) into one table."""
    fresh = run_stage("05_evaluate", run, tiny_params("05_evaluate"), log=quiet, force=True)
    row = fresh.table("stage2_quality").records()[0]
    guides = read_artifact(run / "02_guides.h5")
    assert row["generator"] == guides.attrs["generator"] == "jitter"
    assert 0 < row["ssim_to_proxy"] < 1 and 0 < row["between_guides"] < 1 and row["colour_distance"] >= 0
    assert row["nsam_w1"] >= 0 and row["spr"] == next(r["spr"] for r in fresh.table("spectral_fidelity").records()
                                                      if r["set"].startswith("synthesized"))
    assert fresh.histograms["synthesized"].sum() == pytest.approx(1.0)
    loaded = run_stage("05_evaluate", run, tiny_params("05_evaluate"), log=quiet)
    assert loaded.table("stage2_quality").rows == fresh.table("stage2_quality").rows
    for key in ("edges", "synthesized", "proxy"):
        np.testing.assert_array_equal(loaded.histograms[key], fresh.histograms[key])
    from hiralign import report

    assert len(report.plot_stage2_quality(row, loaded.histograms).axes) == 2


# ----------------------------------------------------------------------------- SIGKILL inside each stage

KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from stage_helpers import tiny_params
    import hiralign.stages as stages, hiralign.store as store

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if {point!r} == "before-write":     # killed while computing: nothing written yet
        stages.Stage.write = die
    else:                               # killed after the temporary file is complete, before the rename
        real = os.replace
        def replace(src, dst):
            die() if str(dst).endswith({record!r}) else real(src, dst)
        store.os.replace = replace
    stages.run_stage({stage!r}, {run!r}, tiny_params({stage!r}), log=lambda _: None)
""")


@pytest.mark.parametrize("point", ["before-write", "before-rename"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_inside_a_stage_leaves_nothing_current_and_the_rerun_resumes(run, stage, point):
    record = run / STAGES[stage].record_file
    record.unlink()
    before = digests(run)
    script = KILLER.format(tests=str(REPO / "tests"), point=point, stage=stage, run=str(run), record=record.name)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not record.exists() and not status(run, stage, tiny_params(stage)).current
    assert RunLock(run).holder()["pid"] != os.getpid()  # the killed process held the lock ...
    if point == "before-rename":
        assert list(run.glob(f".{record.name}.*.tmp"))  # the complete temporary file, never renamed
    assert digests(run) == before  # the other records are untouched
    run_stage(stage, run, tiny_params(stage), log=quiet)  # ... and the OS released it when it died
    assert status(run, stage, tiny_params(stage)).current
    assert not list(run.glob(".*.tmp"))  # the killed writer's temporary file was removed
    for done in upto(stage):
        assert status(run, done, tiny_params(done)).current, done  # resumed: the chain up to here is whole again


# ----------------------------------------------------------------------------- two writers


def test_a_second_writer_stops_naming_the_holder_and_a_dead_holder_is_replaced(run):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from hiralign.stages import RunLock; "
                               f"RunLock({str(run)!r}, command='holder').acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"in use by pid {holder.pid} .*holder"):
            run_stage("02_rgb_guides", run, tiny_params("02_rgb_guides", n_guides=1), log=quiet)
        with pytest.raises(RunLockedError):
            with RunLock(run, wait=1.0):
                pass
        assert digests(run)["02_rgb_guides"] == read_header(run / "02_guides.h5").digest
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with RunLock(run) as lock:  # the holder is dead: the OS released its lock
        assert lock.owned and RunLock(run).holder()["pid"] == os.getpid()
    assert RunLock(run).holder() is None


def test_the_lock_is_lent_to_child_processes_through_the_environment(run, monkeypatch):
    with RunLock(run, command="parent") as lock:
        monkeypatch.setenv("HIRALIGN_LOCK_TOKEN", lock.token)
        run_stage("02_rgb_guides", run, tiny_params("02_rgb_guides"), log=quiet, force=True)
        monkeypatch.delenv("HIRALIGN_LOCK_TOKEN")
        with pytest.raises(RunLockedError):
            run_stage("02_rgb_guides", run, tiny_params("02_rgb_guides"), log=quiet, force=True)


def test_the_pipeline_killed_mid_stage_resumes_from_the_last_complete_stage(tmp_path):
    """``hiralign run`` SIGKILLed while stage 03 runs; a second run meanwhile stops; the rerun resumes."""
    import yaml

    from hiralign.pipeline import load_config, run_pipeline
    from stage_helpers import make_standin_notebooks

    hang = 'import time\nif Path(run_dir, "HANG").exists():\n    Path(run_dir, "STARTED").write_text("")\n    time.sleep(120)\n'
    nbdir = make_standin_notebooks(tmp_path / "notebooks", extra={"03_warp": hang})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "HANG").write_text("")
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"run_dir": str(run_dir), "stages": {}}))
    first = subprocess.Popen([sys.executable, "-m", "hiralign.cli", "run", str(cfg), "--notebooks", str(nbdir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "STARTED").exists():
            assert first.poll() is None and time.monotonic() < deadline, "stage 03 never started"
            time.sleep(0.2)
        with pytest.raises(RunLockedError, match=rf"in use by pid {first.pid}"):
            run_pipeline(load_config(cfg), nbdir, log=quiet)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    (run_dir / "HANG").unlink()
    assert not (run_dir / "03_warp.h5").exists()
    (run_dir / "log.txt").write_text("")
    messages: list[str] = []
    run_pipeline(load_config(cfg), nbdir, log=messages.append)
    assert (run_dir / "log.txt").read_text().split() == ["03_warp", "04_finetune", "05_evaluate"]
    assert sum("up to date, skipped" in m for m in messages) == 3


# ----------------------------------------------------------------------------- every kind of bad value

SR_CHECKPOINT = REPO / "hiralign" / "checkpoints" / "sr-x4.safetensors"

BAD_PARAMETERS = {
    "unknown parameter": ({"03_warp": {"kk": 3}}, "03_warp has no parameter(s) ['kk']"),
    "str for int": ({"03_warp": {"k": "sixteen"}}, "parameter k must be int, got 'sixteen'"),
    "bool for int": ({"02_rgb_guides": {"n_guides": True}}, "parameter n_guides must be int, got True"),
    "float for int": ({"03_warp": {"iters": 2.5}}, "parameter iters must be int, got 2.5"),
    "int for str": ({"01_proxy": {"task": 3}}, "parameter task must be str, got 3"),
    "str for bool": ({"04_finetune": {"upper_bound": "yes"}}, "parameter upper_bound must be bool"),
    "zero count": ({"02_rgb_guides": {"n_guides": 0}}, "n_guides must be >= 1, got 0"),
    "fraction out of range": ({"02_rgb_guides": {"strength": 1.5}}, "strength must be in [0, 1], got 1.5"),
    "negative size": ({"00_data": {"image_size": -4}}, "image_size must be >= 1"),
    "bad learning rate": ({"04_finetune": {"lr": 0.0}}, "lr must be > 0"),
    "bad warp setting": ({"03_warp": {"stencil": 4}}, "03_warp: "),
    "unknown task": ({"01_proxy": {"task": "denoise-everything"}}, "task must be one of"),
    "unknown backbone": ({"01_proxy": {"backbone": "resnet9000"}}, "backbone must be empty, a registered backbone"),
    "unknown generator": ({"02_rgb_guides": {"generator": "dalle"}}, "generator must be one of jitter"),
    "unknown index": ({"03_warp": {"index": "annoy"}}, "03_warp: "),
    "unknown loss": ({"04_finetune": {"loss": "l3"}}, "loss must be one of"),
    "unknown composition": ({"04_finetune": {"composition": "everything"}}, "composition must be one of"),
    "bad ratio": ({"04_finetune": {"ratio": "3:0"}}, "ratio must be generated:proxy"),
    "unknown validation": ({"04_finetune": {"validation": "test"}}, "validation must be one of"),
    "unknown metric": ({"05_evaluate": {"metric": "lpips"}}, "metric must be one of"),
    "unknown device": ({"03_warp": {"device": "tpu"}}, "tpu"),
    "missing dataset path": ({"00_data": {"dataset": "/nonexistent/cave"}}, "/nonexistent/cave: no such file or folder"),
    "missing checkpoint": ({"01_proxy": {"checkpoint": "/nonexistent.safetensors"}}, "checkpoint must be empty or an existing file"),
    "checkpoint of another task": ({"01_proxy": {"checkpoint": str(SR_CHECKPOINT)}}, "task 'sr-x4'"),
    "bad observed list": ({"01_proxy": {"observed": "first"}}, "observed must be 'all' or comma-separated"),
    "unknown stage": ({"07_nothing": {}}, "unknown stage(s) ['07_nothing']"),
}


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    from stage_helpers import make_standin_notebooks

    return make_standin_notebooks(tmp_path_factory.mktemp("standins") / "notebooks")


@pytest.mark.parametrize("case", list(BAD_PARAMETERS))
def test_a_bad_parameter_fails_before_any_stage_runs(standins, tmp_path, case):
    import yaml

    from hiralign.pipeline import PipelineError, load_config, run_pipeline

    stages, message = BAD_PARAMETERS[case]
    run_dir = tmp_path / "run"
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"run_dir": str(run_dir), "stages": stages}))
    with pytest.raises(PipelineError) as err:
        run_pipeline(load_config(cfg), standins, log=quiet)
    assert message in str(err.value)
    assert not run_dir.exists() or not list(run_dir.glob("*.h5"))


@pytest.mark.parametrize("text,message", [
    ("stages: [00_data]\n", "'stages' must map each stage name"),
    ("stages: {03_warp: {k: 8}\n", "is not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_a_malformed_parameter_file_is_reported(tmp_path, text, message):
    from hiralign.pipeline import PipelineError, load_config

    cfg = tmp_path / "p.yaml"
    cfg.write_text(text)
    with pytest.raises(PipelineError, match=message):
        load_config(cfg)


def test_a_corrupt_dataset_file_fails_before_any_stage_runs(standins, tmp_path):
    import yaml

    from hiralign.pipeline import PipelineError, load_config, run_pipeline

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    (scenes / "balloons_ms.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 4)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "stages": {"00_data": {"dataset": str(scenes)}}}))
    with pytest.raises(PipelineError, match=r"balloons_ms\.mat: corrupt or truncated"):
        run_pipeline(load_config(cfg), standins, log=quiet)
