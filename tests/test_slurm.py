"""The SLURM watch's pure parts (hiralign.slurm), without a cluster: how a job's end is named from
slurmstepd / srun / submitit log lines, how sinfo's partitions and sbatch's refusals are read, and
the resource check. The same paths against a real cluster: tests/test_slurm_cluster.py."""
from __future__ import annotations

import subprocess

import pytest

from hiralign import slurm
from hiralign.reproduce.collection import one_line


@pytest.mark.parametrize("log, cause", [
    ("slurmstepd: error: *** JOB 12 ON vm CANCELLED AT 2026-12-02T05:17:20 ***", "cancelled (scancel)"),
    ("slurmstepd: error: *** JOB 12 ON vm CANCELLED AT 2026-12-02T05:17:20 DUE TO TIME LIMIT ***", "time limit reached"),
    ("submitit WARNING - Caught signal SIGUSR2 on vm: this job is timed-out.", "time limit reached"),
    ("slurmstepd: error: *** JOB 7 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO NODE FAILURE ***", "node failure"),
    ("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=7.0. Some of your processes may have been killed "
     "by the cgroup out-of-memory handler.", "out of memory"),
    ("srun: error: vm: task 0: Killed", "killed by a signal (Killed)"),
    ("Traceback (most recent call last): ValueError: bad", None),
])
def test_cause_of_a_job_end_is_read_from_its_log(log, cause):
    assert slurm.cause_in_log(f"some output\n{log}\nmore") == cause


def fake_sinfo(monkeypatch, stdout: str, returncode: int = 0):
    def run(command, timeout=30):
        assert command[0] == "sinfo"
        return subprocess.CompletedProcess(command, returncode, stdout, "")
    monkeypatch.setattr(slurm, "_run", run)


def test_partitions_take_the_largest_node_and_put_the_default_first(monkeypatch):
    fake_sinfo(monkeypatch, "gpu|32|256000|gpu:a100:4(S:0-1)\ndebug*|2|8000|(null)\ngpu|64+|512000|gpu:8\n")
    parts = slurm.partitions()
    assert list(parts) == ["debug", "gpu"]
    assert parts["gpu"] == {"cpus": 64, "memory_mb": 512000, "gpus": 8, "default": False}
    assert parts["debug"]["gpus"] == 0


def test_resource_check_names_what_no_node_has(monkeypatch, tmp_path):
    fake_sinfo(monkeypatch, "debug*|2|8000|(null)\ngpu|32|256000|gpu:a100:4\n")
    ok = slurm.SlurmSettings(folder=tmp_path, cpus_per_task=2, mem_gb=4, gpus_per_node=0)
    slurm.check_resources(ok)
    slurm.check_resources(slurm.SlurmSettings(folder=tmp_path, partition="gpu", cpus_per_task=8, gpus_per_node=4))
    with pytest.raises(slurm.SlurmError, match=r"^--gpus 1 requested but partition 'debug' has no GPUs per node"):
        slurm.check_resources(slurm.SlurmSettings(folder=tmp_path, cpus_per_task=1, mem_gb=1))  # GPU default
    with pytest.raises(slurm.SlurmError, match=r"^--gpus 5 requested but partition 'gpu' has 4 GPUs per node; pass --gpus 4$"):
        slurm.check_resources(slurm.SlurmSettings(folder=tmp_path, partition="gpu", gpus_per_node=5, mem_gb=1))
    with pytest.raises(slurm.SlurmError, match=r"^partition 'cpu' does not exist \(sinfo lists: debug, gpu\)"):
        slurm.check_resources(slurm.SlurmSettings(folder=tmp_path, partition="cpu"))


def test_sinfo_failure_is_one_line(monkeypatch):
    fake_sinfo(monkeypatch, "slurm_load_partitions: Unable to contact slurm controller", returncode=1)
    with pytest.raises(slurm.SlurmError, match="^sinfo failed: slurm_load_partitions: Unable to contact"):
        slurm.partitions()


def test_submission_error_keeps_sbatch_error_lines_only():
    err = RuntimeError("Could not make sbatch call now, return code 1\nsbatch: error: invalid partition specified: "
                       "nope\nsbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert slurm.submission_error(err) == ("invalid partition specified: nope; Batch job submission failed: "
                                           "Invalid partition name specified")
    assert slurm.submission_error(RuntimeError("boom\nsecond line")) == "boom"


def test_warning_signal_comes_a_tenth_of_the_limit_early(tmp_path):
    delay = {m: slurm.SlurmSettings(folder=tmp_path, timeout_min=m).parameters()["slurm_signal_delay_s"]
             for m in (1, 5, 240)}
    assert delay == {1: 10, 5: 30, 240: 90}


def test_a_runs_error_stays_whole_on_one_table_line():
    text = one_line("PipelineError: stage 04 failed\n  in cell 3 | ValueError: x\n\n")
    assert text == "PipelineError: stage 04 failed / in cell 3 / ValueError: x"
    assert one_line("x" * 700).endswith("...") and len(one_line("x" * 700)) == 600


def test_an_accounting_record_that_lags_the_queue_is_waited_for(monkeypatch):
    answers = iter(["PENDING", "", "CANCELLED"])  # slurmdbd records the end a moment after squeue drops the job
    monkeypatch.setattr(slurm, "accounted_state", lambda job_id: next(answers))
    assert slurm.final_accounted_state("12", lag_s=5.0, poll_s=0.0) == "CANCELLED"
    monkeypatch.setattr(slurm, "accounted_state", lambda job_id: "RUNNING")
    assert slurm.final_accounted_state("12", lag_s=0.0, poll_s=0.0) == "RUNNING"  # bounded: what sacct says at the deadline
    monkeypatch.setattr(slurm, "accounted_state", lambda job_id: None)
    assert slurm.final_accounted_state("12", lag_s=60.0, poll_s=60.0) is None  # no accounting: no wait


@pytest.mark.parametrize("returncode, stdout, state", [(0, "CANCELLED by 0\n", "CANCELLED"), (0, "", ""),
                                                       (1, "sacct: error: accounting storage is disabled", None)])
def test_sacct_answers_are_read_as_a_state_no_record_or_no_accounting(monkeypatch, returncode, stdout, state):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm, "_run", lambda command, timeout=30: subprocess.CompletedProcess(command, returncode, stdout, ""))
    assert slurm.accounted_state("12") == state
