"""Helpers of the real-SLURM tests (tests/test_slurm_cluster.py, tests/test_slurm_accounting.py): the
running cluster as a fixture body, a stand-in grid on it whose runs can be held in stage 04, a
controller subprocess, bounded waits."""
from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import slurm_cluster
from grid_helpers import EXPERIMENTS, make_standin_grid
from hiralign import reproduce as rp
from hiralign import slurm

#: How long a fault may take to reach its named outcome (the issue's bound).
BOUND_S = 60
HIRALIGN = Path(sys.executable).with_name("hiralign")
#: Stage 04 of a run waits while ``<hold>/<run name>`` exists, after writing ``holding`` (with the
#: pid of the job's Python, the kernel's parent) and the threads the job was given.
HOLD_CODE = """\
import os, time
Path(run_dir, "threads.txt").write_text(os.environ.get("OMP_NUM_THREADS", ""))
hold = Path({hold!r}, Path(run_dir).name)
if hold.exists():
    Path(run_dir, "holding").write_text(str(os.getppid()))
while hold.exists():
    time.sleep(0.2)
"""


def running_cluster(tmp_path_factory, accounting: bool = False):
    """A module fixture's body: the cluster of tests/slurm_cluster.py, ``SLURM_CONF`` pointing at it
    while the module's tests run; skips (saying why) where it cannot start."""
    reason = slurm_cluster.unavailable(accounting)
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm-accounting" if accounting else "slurm")
    with contextlib.ExitStack() as stack:
        try:
            env = stack.enter_context(slurm_cluster.cluster(root, cpus=2, memory_mb=8000, accounting=accounting))
        except (RuntimeError, OSError, subprocess.SubprocessError) as err:  # daemons that cannot run here
            pytest.skip(f"could not start a SLURM cluster on this machine: {err}")
        previous = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
        try:
            yield env
        finally:
            if previous is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = previous


class Grid:
    """One stand-in grid on the cluster: its folders, hold files and timed log."""

    def __init__(self, tmp_path: Path, hold: tuple[str, ...] = ()):
        self.tmp, self.hold_dir = tmp_path, tmp_path / "hold"
        self.hold_dir.mkdir()
        for name in hold:
            (self.hold_dir / name).write_text("")
        self.kw = make_standin_grid(tmp_path, HOLD_CODE.format(hold=str(self.hold_dir)))
        self.runs, self.results = tmp_path / "runs", tmp_path / "results"
        self.lines: list[tuple[float, str]] = []

    def log(self, message: str) -> None:
        self.lines.append((time.monotonic(), message))

    def run_dir(self, name: str) -> Path:
        return self.runs / "mini" / "table6" / name

    def slurm(self, **settings) -> dict:
        return {"cluster": "slurm", "folder": self.tmp / "submitit", "partition": slurm_cluster.PARTITION,
                "cpus_per_task": 1, "mem_gb": 1, "gpus_per_node": 0, "poll_s": 1.0, "grace_s": 5.0,
                "report_s": 10.0, **settings}

    def reproduce(self, **settings) -> rp.TableRun:
        return rp.reproduce("table6", "mini", executor="slurm", jobs=2, runs_root=self.runs, results_dir=self.results,
                            slurm=self.slurm(**settings), log=self.log, **self.kw)

    def cli(self, *extra: str) -> list[str]:
        return [str(HIRALIGN), "reproduce", "table6", "--profile", "mini", "--executor", "slurm", "--cluster", "slurm",
                "--partition", slurm_cluster.PARTITION, "--cpus", "1", "--mem-gb", "1", "--gpus", "0", "--jobs", "2",
                "--params-root", str(self.kw["params_root"]), "--notebooks", str(self.kw["notebooks_dir"]),
                "--runs-root", str(self.runs), "--results-dir", str(self.results), *extra]

    def job_id(self, name: str, timeout: float = 60) -> str:
        wait_for(lambda: slurm.read_job_record(self.run_dir(name)), timeout, f"{name} submitted")
        return slurm.read_job_record(self.run_dir(name))["job_id"]

    def wait_holding(self, name: str, timeout: float = 90) -> int:
        """Wait until run ``name`` sits in its stage-04 hold; the pid of its job's Python."""
        marker = self.run_dir(name) / "holding"
        wait_for(marker.exists, timeout, f"{name} holding in stage 04")
        return int(marker.read_text())

    def release(self, *names: str) -> None:
        for name in names or EXPERIMENTS:
            (self.hold_dir / name).unlink(missing_ok=True)

    def said(self, text: str) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.lines if text in m]


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def in_queue(job_id: str) -> bool:
    return job_id in slurm.queue_states([job_id])


def background(function):
    """Run ``function`` in a thread; the returned callable joins it (bounded) and gives its value."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(value=function()), daemon=True)
    thread.start()

    def join(timeout: float = 180):
        thread.join(timeout)
        assert not thread.is_alive(), f"the grid did not finish within {timeout:.0f} s"
        return box["value"]
    return join


def rp_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(line for line in path.read_text().splitlines() if not line.startswith("#")))


class Controller:
    """``hiralign reproduce`` in a subprocess, its output collected line by line."""

    def __init__(self, command: list[str]):
        self.lines: list[str] = []
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        wait_for(lambda: any(text in line for line in self.lines), timeout, f"{text!r} in the output")

    def output(self) -> str:
        self.reader.join(10)
        return "".join(self.lines)
