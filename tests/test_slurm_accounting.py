"""The SLURM watch with job accounting (``make test-slurm``): the same single-node cluster as
tests/test_slurm_cluster.py plus slurmdbd on a MariaDB server of its own, so ``sacct`` knows every
job. A job that leaves the queue without a result gets its cause from ``sacct`` (here: a pending
job cancelled before it ever wrote a log line), a killed one from its log as without accounting.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from hiralign import slurm
from slurm_grid import BOUND_S, Grid, background, running_cluster, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(os.environ.get("HIRALIGN_SLURM_TESTS") != "1",
                                                    reason="real-SLURM tests run with `make test-slurm`")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, accounting=True)


def test_pending_job_cancelled_is_named_by_sacct_and_a_killed_one_by_its_log(cluster, tmp_path, monkeypatch):
    asked = {}

    def spy(job_id):
        asked[job_id] = slurm_accounted(job_id)
        return asked[job_id]
    slurm_accounted = slurm.accounted_state
    monkeypatch.setattr(slurm, "accounted_state", spy)
    # two CPUs per job on the two-CPU node: of the followers' array one runs, the other pends
    grid = Grid(tmp_path, hold=("proxy", "mixed"))
    join = background(lambda: grid.reproduce(cpus_per_task=2))
    running = wait_for(lambda: next((n for n in ("proxy", "mixed") if (grid.run_dir(n) / "holding").exists()), None),
                       120, "a follower holding in stage 04")
    waiting = "mixed" if running == "proxy" else "proxy"
    pending = grid.job_id(waiting)
    wait_for(lambda: slurm.queue_states([pending]).get(pending, ("",))[0] == "PENDING", 30, f"{pending} pending")
    subprocess.run(["scancel", pending], check=True, timeout=30)
    os.kill(grid.wait_holding(running), signal.SIGKILL)
    faults = time.monotonic()
    run = join()
    grid.release()
    outcome = {o.name: o for o in run.outcomes}
    assert outcome["generated"].ok
    assert outcome[waiting].error == f"slurm job {pending}: cancelled; it wrote no result"
    assert asked[pending] == "CANCELLED"  # from the accounting database: the job never ran, no log
    assert outcome[running].error.startswith(f"slurm job {grid.job_id(running)}: killed by a signal (Killed)")
    assert asked[grid.job_id(running)] == "FAILED"  # sacct's word is generic: the log names the signal
    for name in (waiting, running):
        (when, _), = grid.said(f"[{name}] FAILED")
        assert when - faults <= BOUND_S
