"""The table grid on a real single-node SLURM cluster (``make test-slurm``; tests/slurm_cluster.py).

A stand-in table6 (tests/grid_helpers.py: three runs, seconds each) goes through
``--executor slurm --cluster slurm`` against real slurmctld / slurmd / munge without job accounting
(``sacct`` answers "accounting storage is disabled", as on many small clusters), and faults are
injected: scancel, kill -9 of a job's process, a time limit, a bad partition, impossible CPUs,
GPUs on a GPU-less node, a killed and an interrupted controller. Each must end in its named
outcome within 60 s of happening, never in a hang, an orphaned job or a duplicate.

These tests run only under ``make test-slurm`` (``HIRALIGN_SLURM_TESTS=1``): they need root and
install the distribution's SLURM packages when they are missing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from grid_helpers import EXPERIMENTS
from hiralign import slurm
from slurm_grid import BOUND_S, Controller, Grid, background, in_queue, rp_rows, running_cluster, wait_for


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(os.environ.get("HIRALIGN_SLURM_TESTS") != "1",
                                                    reason="real-SLURM tests run with `make test-slurm`")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory)


# ----------------------------------------------------------------------------- a clean grid


def test_grid_runs_as_arrays_with_bounded_threads_and_a_rerun_submits_nothing(cluster, tmp_path):
    grid = Grid(tmp_path)
    run = grid.reproduce()
    assert run.ok, [o.error for o in run.outcomes]
    rows = {(r["row"], r["metric"]): r for r in rp_rows(grid.results / "table6.csv") if r["group"] == "Denoising"}
    assert float(rows[("Proxy + Generated", "psnr")]["ours"]) == 33.0  # as the local executor gives
    ids = {name: slurm.read_job_record(grid.run_dir(name))["job_id"] for name in EXPERIMENTS}
    # 'generated' leads (it computes the shared stages), the other two follow as one array of two
    assert ids["proxy"].split("_")[0] == ids["mixed"].split("_")[0] and "_" in ids["proxy"]
    scripts = [p.read_text() for p in (tmp_path / "submitit").glob("*submission.sh")]
    assert any("#SBATCH --array=0-1%2" in s for s in scripts), "the array's parallelism is --jobs"
    assert all((grid.run_dir(n) / "threads.txt").read_text() == "1" for n in EXPERIMENTS)  # = --cpus

    grid.lines.clear()
    again = grid.reproduce()
    assert again.ok and not grid.said("submitted as")
    assert len(grid.said("complete: every stage is current, not submitted")) == 3


# ----------------------------------------------------------------------------- submission faults


@pytest.mark.parametrize("settings, message", [
    ({"partition": "nope"}, "partition 'nope' does not exist (sinfo lists: debug); pass --partition"),
    ({"cpus_per_task": 4}, "--cpus 4 exceeds the largest node of partition 'debug' (2 CPUs)"),
    ({"gpus_per_node": 1}, "--gpus 1 requested but partition 'debug' has no GPUs per node; pass --gpus 0"),
    ({"mem_gb": 64}, "--mem-gb 64 exceeds the largest node of partition 'debug' (8000 MB)"),
])
def test_impossible_requests_fail_before_anything_is_submitted(cluster, tmp_path, settings, message):
    grid = Grid(tmp_path)
    with pytest.raises(slurm.SlurmError) as err:
        grid.reproduce(**settings)
    assert str(err.value) == message
    assert not any(slurm.read_job_record(grid.run_dir(n)) for n in EXPERIMENTS)


def test_cli_prints_a_rejected_grid_in_one_line(cluster, tmp_path):
    grid = Grid(tmp_path)
    done = subprocess.run(grid.cli("--partition", "nope"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("hiralign reproduce: partition 'nope' does not exist (sinfo lists: debug); "
                                   "pass --partition")
    assert "Traceback" not in done.stderr + done.stdout


def test_sbatch_rejection_and_a_never_starting_job_are_named(cluster, tmp_path, monkeypatch):
    # past the resource check (as on a cluster whose sinfo hides a limit): sbatch's own answers
    monkeypatch.setattr(slurm, "check_resources", lambda settings: None)
    grid = Grid(tmp_path)
    with pytest.raises(slurm.SlurmError, match=r"^sbatch rejected the jobs: Invalid generic resource \(gres\) "
                                               r"specification$"):
        grid.reproduce(gpus_per_node=1)
    start = time.monotonic()
    run = grid.reproduce(cpus_per_task=4)  # accepted, pending for PartitionConfig forever
    assert time.monotonic() - start < 2 * BOUND_S  # the leader's phase, then its followers'
    for outcome in run.outcomes:
        assert not outcome.ok and "can never start: pending for PartitionConfig" in outcome.error
        assert not in_queue(slurm.read_job_record(outcome.run_dir)["job_id"])  # cancelled, not orphaned


# ----------------------------------------------------------------------------- faults of running jobs


def test_scancel_and_kill_of_running_jobs_get_named_outcomes(cluster, tmp_path):
    grid = Grid(tmp_path, hold=("proxy", "mixed"))
    join = background(grid.reproduce)
    victim = grid.wait_holding("mixed")
    grid.wait_holding("proxy")
    subprocess.run(["scancel", grid.job_id("proxy")], check=True, timeout=30)
    os.kill(victim, signal.SIGKILL)
    faults = time.monotonic()
    run = join()
    grid.release()
    outcome = {o.name: o for o in run.outcomes}
    assert outcome["generated"].ok
    assert outcome["proxy"].error.startswith("cancelled (scancel) (slurm job ")
    assert outcome["mixed"].error.startswith(f"slurm job {grid.job_id('mixed')}: killed by a signal (Killed)")
    for name in ("proxy", "mixed"):
        (when, line), = grid.said(f"[{name}] FAILED")
        assert when - faults <= BOUND_S and outcome[name].error in line
    status = {r["row"]: r["status"] for r in rp_rows(grid.results / "table6.csv") if r["metric"] == "psnr" and r["group"] == "Denoising"}
    assert "cancelled (scancel)" in status["Proxy only"]  # the .md/.csv status keeps the whole error


def test_time_limit_is_named(cluster, tmp_path):
    grid = Grid(tmp_path, hold=("generated",))
    join = background(lambda: grid.reproduce(timeout_min=1))
    grid.wait_holding("generated")
    holding = time.monotonic()  # the job started at most this long ago; its limit is 60 s
    run = join(timeout=240)
    grid.release()
    outcome = {o.name: o for o in run.outcomes}
    assert outcome["generated"].error.startswith("time limit reached (slurm job "), outcome["generated"].error
    assert outcome["proxy"].ok and outcome["mixed"].ok  # the followers run on
    (when, _), = grid.said("[generated] FAILED")
    assert when - holding <= 60 + BOUND_S
    assert grid.said("[generated] slurm job")  # state lines while it ran


# ----------------------------------------------------------------------------- the controller


def test_rerun_attaches_to_running_jobs_and_interrupt_cancels_them(cluster, tmp_path):
    grid = Grid(tmp_path, hold=("generated",))
    first = Controller(grid.cli())
    grid.wait_holding("generated")
    job = grid.job_id("generated")
    first.process.kill()  # the controller dies without a word: its job keeps running
    first.process.wait(timeout=30)
    assert in_queue(job)

    second = Controller(grid.cli())
    second.wait_for_line(f"[generated] attached to slurm job {job} (RUNNING)")
    second.process.send_signal(signal.SIGINT)
    second.process.wait(timeout=BOUND_S)
    out = second.output()
    assert "submitted as" not in out  # no duplicate
    assert f"interrupted: cancelled slurm job(s) {job}" in out
    wait_for(lambda: not in_queue(job), 30, f"job {job} to leave the queue after the interrupt")
    grid.release()


