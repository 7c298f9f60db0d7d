"""The runs of a grid as SLURM jobs (submitit), watched so that no failure hangs, orphans or hides.

:func:`run_slurm` submits the runs that are not already complete as one job array (``--jobs`` of
them at a time), records each job id in its run folder (``slurm-job.json``) so that a rerun
attaches to a job still queued instead of submitting a duplicate, and then watches the queue
itself (``squeue``, every ``poll_s`` seconds; no job accounting needed):

- a result written by the job ends it (its :class:`~hiralign.executors.RunOutcome`);
- a job that left the queue, or reached a final state, without a result within ``grace_s`` is
  failed with its cause named -- cancelled, time limit, out of memory, node failure, killed by a
  signal -- from ``sacct`` when accounting exists, else from slurmstepd's lines in the job's log;
- a job pending for a reason that can never clear (``PartitionConfig``: more CPUs or memory than a
  node has, ...) is cancelled and failed at once;
- every ``report_s`` seconds one line per unfinished job says its state and pending reason.

Before anything is submitted, the resources are checked against ``sinfo`` (partition, CPUs,
memory, GPUs) and a rejected ``sbatch`` becomes one readable :class:`SlurmError` line; SIGINT or
SIGTERM of the controller cancels the grid's jobs. The bounds are in docs/reproduce.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hiralign.errors import UserError
from hiralign.executors import Log, RunJob, RunOutcome, execute_run
from hiralign.store import write_text_atomic

#: The file in a run folder naming the SLURM job that runs it.
JOB_RECORD = "slurm-job.json"
#: Pending reasons that never clear by waiting (the request exceeds what the partition offers).
IMPOSSIBLE_REASONS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
                      "InvalidAccount", "InvalidQOS", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob")
#: squeue states after which no result will come (kept in the queue for MinJobAge seconds).
FINAL_STATES = ("CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT")
#: What each final state is called in a failure line.
CAUSES = {"CANCELLED": "cancelled", "TIMEOUT": "time limit reached", "OUT_OF_MEMORY": "out of memory",
          "NODE_FAIL": "node failure", "PREEMPTED": "preempted", "BOOT_FAIL": "node failed to boot",
          "DEADLINE": "deadline reached", "FAILED": "the job failed", "COMPLETED": "the job ended"}


class SlurmError(UserError, RuntimeError):
    """A grid that cannot be submitted (bad partition, impossible resources, rejected sbatch)."""


@dataclass(frozen=True)
class SlurmSettings:
    """Resources of each SLURM job (submitit parameters) and the watch's timing.

    ``cluster``: ``None`` lets submitit pick (SLURM when ``sbatch`` exists), ``"local"`` runs the
    jobs as local subprocesses (tests), ``"debug"`` runs them in this process. ``parallelism``: at
    most this many of the grid's jobs run at once (the array's ``%N``). ``poll_s``: queue checks;
    ``grace_s``: how long a job gone from the queue may take to show its result; ``report_s``:
    period of the state lines."""

    folder: Path
    cluster: str | None = None
    timeout_min: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    partition: str | None = None
    parallelism: int = 8
    poll_s: float = 5.0
    grace_s: float = 15.0
    report_s: float = 30.0

    def parameters(self) -> dict:
        # submitit's warning signal (USR2) comes signal_delay_s before the limit (90 s by default,
        # at once for a limit of a minute): a tenth of the limit, between 10 and 90 s
        params = {"timeout_min": self.timeout_min, "gpus_per_node": self.gpus_per_node,
                  "cpus_per_task": self.cpus_per_task, "mem_gb": self.mem_gb,
                  "slurm_array_parallelism": self.parallelism,
                  "slurm_signal_delay_s": int(min(90, max(10, self.timeout_min * 6)))}
        if self.partition:
            params["slurm_partition"] = self.partition
        return params


def run_slurm(jobs: Sequence[RunJob], settings: SlurmSettings, log: Log = print,
              work: Callable[[RunJob], RunOutcome] = execute_run) -> list[RunOutcome]:
    """Run ``jobs`` as SLURM jobs (module docstring); one outcome per job, in order. ``work`` is
    what each job executes (the pipeline of its run)."""
    import submitit

    outcomes = {job.name: complete_outcome(job) for job in jobs if not job.force and is_complete(job)}
    for name in outcomes:
        log(f"[{name}] complete: every stage is current, not submitted")
    todo = [dataclasses.replace(job, threads=settings.cpus_per_task) for job in jobs if job.name not in outcomes]
    if not todo:
        return [outcomes[job.name] for job in jobs]
    executor = submitit.AutoExecutor(folder=settings.folder, cluster=settings.cluster)
    executor.update_parameters(name="hiralign-reproduce", **settings.parameters())
    on_slurm = executor.cluster == "slurm"
    if on_slurm:
        check_resources(settings)
    handles = attach(todo, settings, log) if on_slurm else {}
    fresh = [job for job in todo if job.name not in handles]
    handles.update(submit(executor, fresh, work, log))
    watch = SlurmWatch(handles, {job.name: job for job in todo}, settings, on_slurm, log)
    with cancel_on_interrupt(watch):
        outcomes.update(watch.wait())
    return [outcomes[job.name] for job in jobs]


def is_complete(job: RunJob) -> bool:
    """Every stage of the run is current (the pipeline would skip them all): nothing to submit."""
    from hiralign.pipeline import PipelineError, load_config, pending_stages

    try:
        return not pending_stages(load_config(job.config), job.notebooks_dir)
    except (PipelineError, OSError):
        return False  # the job itself reports what is wrong


def complete_outcome(job: RunJob) -> RunOutcome:
    from hiralign.stages import STAGES

    return RunOutcome(job.name, job.run_dir, ok=True, seconds=0.0, skipped=list(STAGES))


# ----------------------------------------------------------------------------- before submitting


def _run(command: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def partitions() -> dict[str, dict[str, Any]]:
    """``sinfo``'s partitions: largest node CPUs, memory (MB) and GPUs of each; default first."""
    done = _run(["sinfo", "-h", "-o", "%P|%c|%m|%G"])
    if done.returncode != 0:
        raise SlurmError(f"sinfo failed: {done.stderr.strip() or done.stdout.strip()}")
    found: dict[str, dict[str, Any]] = {}
    for line in done.stdout.split("\n"):
        if line.count("|") != 3:
            continue
        name, cpus, memory, gres = line.split("|")
        default, name = name.endswith("*"), name.rstrip("*")
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        entry = found.setdefault(name, {"cpus": 0, "memory_mb": 0, "gpus": 0, "default": default})
        entry["cpus"] = max(entry["cpus"], int(cpus.rstrip("+")))
        entry["memory_mb"] = max(entry["memory_mb"], int(memory.rstrip("+")))
        entry["gpus"] = max(entry["gpus"], gpus)
    return dict(sorted(found.items(), key=lambda item: not item[1]["default"]))


def check_resources(settings: SlurmSettings) -> None:
    """One :class:`SlurmError` line when the partition does not exist or no node of it has the
    requested CPUs, memory or GPUs (SLURM would queue such a job forever or reject it)."""
    known = partitions()
    if not known:
        raise SlurmError("sinfo lists no partition: is slurmctld running?")
    name = settings.partition or next(iter(known))
    if name not in known:
        raise SlurmError(f"partition {name!r} does not exist (sinfo lists: {', '.join(known)}); pass --partition")
    part = known[name]
    if settings.cpus_per_task > part["cpus"]:
        raise SlurmError(f"--cpus {settings.cpus_per_task} exceeds the largest node of partition {name!r} "
                         f"({part['cpus']} CPUs)")
    if settings.mem_gb * 1024 > part["memory_mb"]:
        raise SlurmError(f"--mem-gb {settings.mem_gb} exceeds the largest node of partition {name!r} "
                         f"({part['memory_mb']} MB)")
    if settings.gpus_per_node > part["gpus"]:
        raise SlurmError(f"--gpus {settings.gpus_per_node} requested but partition {name!r} has "
                         f"{part['gpus'] or 'no'} GPUs per node; pass --gpus {part['gpus']}")


def attach(jobs: Sequence[RunJob], settings: SlurmSettings, log: Log) -> dict[str, Any]:
    """Handles of the jobs recorded in the run folders that are still queued (a rerun watches them
    instead of submitting duplicates)."""
    import submitit

    recorded = {job.name: read_job_record(job.run_dir) for job in jobs}
    ids = [r["job_id"] for r in recorded.values() if r]
    queued = queue_states(ids) if ids else {}
    handles = {}
    for job in jobs:
        record = recorded[job.name]
        if record and record["job_id"] in queued:
            handles[job.name] = submitit.SlurmJob(folder=record["folder"], job_id=record["job_id"])
            log(f"[{job.name}] attached to slurm job {record['job_id']} ({queued[record['job_id']][0]}), "
                f"submitted {record['submitted']}")
    return handles


def read_job_record(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / JOB_RECORD).read_text())
    except (OSError, ValueError):
        return None


def submit(executor, jobs: Sequence[RunJob], work: Callable, log: Log) -> dict[str, Any]:
    """Submit ``jobs`` as one array (one ``sbatch``: all or nothing); record each job id."""
    if not jobs:
        return {}
    handles = []
    try:
        with executor.batch():
            handles = [executor.submit(work, job) for job in jobs]
    except Exception as err:  # noqa: BLE001 -- sbatch rejected the array: one readable line
        raise SlurmError(f"sbatch rejected the jobs: {submission_error(err)}") from err
    for job, handle in zip(jobs, handles):
        record = {"job_id": str(handle.job_id), "folder": str(executor.folder), "cluster": executor.cluster,
                  "submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "host": socket.gethostname()}
        write_text_atomic(job.run_dir / JOB_RECORD, json.dumps(record, indent=1) + "\n")
        log(f"[{job.name}] submitted as {executor.cluster} job {handle.job_id} (logs: {executor.folder})")
    return {job.name: handle for job, handle in zip(jobs, handles)}


def submission_error(err: Exception) -> str:
    """The ``error:`` lines of sbatch's answer inside a submitit exception, else its first line."""
    text = str(err)
    lines = [line.split("error:", 1)[1].strip() for line in text.split("\n") if "error:" in line]
    return "; ".join(dict.fromkeys(lines)) or (text.strip().split("\n") or [type(err).__name__])[0]


# ----------------------------------------------------------------------------- the queue


def queue_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{job id: (state, reason)}`` of the queued jobs among ``job_ids`` (array tasks one by one)."""
    done = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(sorted({i.split("_")[0] for i in job_ids}))])
    states = {}
    for line in done.stdout.split("\n"):
        if line.count("|") == 2:
            job_id, state, reason = line.split("|")
            states[job_id] = (state, reason)
    return states


def accounted_state(job_id: str) -> str | None:
    """The state ``sacct`` records for ``job_id``: ``None`` without job accounting (no sacct, or it
    fails), ``""`` while the database has no record of the job yet."""
    if shutil.which("sacct") is None:
        return None
    done = _run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id])
    if done.returncode != 0:
        return None
    states = done.stdout.split()
    return states[0] if states else ""


#: How long slurmdbd may take to record the end of a job that has left the queue (s).
ACCOUNTING_LAG_S = 15.0


def final_accounted_state(job_id: str, lag_s: float = ACCOUNTING_LAG_S, poll_s: float = 1.0) -> str | None:
    """:func:`accounted_state` once it is a final one: a job that has just left the queue may still
    read ``PENDING`` / ``RUNNING`` (or have no record) in the accounting database for a moment, so ask
    again for up to ``lag_s``; what sacct says then (``None`` at once without job accounting)."""
    deadline = time.monotonic() + lag_s
    while True:
        state = accounted_state(job_id)
        if state is None or state in CAUSES or time.monotonic() >= deadline:
            return state
        time.sleep(poll_s)


def cause_in_log(text: str) -> str | None:
    """The cause of a job's end that slurmstepd / srun wrote into its log, if any."""
    if "DUE TO TIME LIMIT" in text or "this job is timed-out" in text:  # slurmstepd; submitit's USR2 handler
        return CAUSES["TIMEOUT"]
    if "DUE TO NODE FAIL" in text:
        return CAUSES["NODE_FAIL"]
    if "DUE TO PREEMPTION" in text:
        return CAUSES["PREEMPTED"]
    if re.search(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT", text):
        return "cancelled (scancel)"
    if re.search(r"oom[-_ ]kill|Out Of Memory|OUT_OF_MEMORY", text, re.IGNORECASE):
        return CAUSES["OUT_OF_MEMORY"]
    killed = re.search(r"task \d+: (Killed|Terminated|Aborted|Segmentation fault)", text)
    if killed:
        return f"killed by a signal ({killed.group(1)})"
    return None


class SlurmWatch:
    """Waits for the handles of one grid: results, vanished or stuck jobs, periodic state lines."""

    def __init__(self, handles: dict[str, Any], jobs: dict[str, RunJob], settings: SlurmSettings,
                 on_slurm: bool, log: Log):
        self.handles, self.jobs, self.settings, self.on_slurm, self.log = handles, jobs, settings, on_slurm, log
        self.outcomes: dict[str, RunOutcome] = {}
        self.gone_since: dict[str, float] = {}
        self.last_state: dict[str, tuple[str, str]] = {}
        self.start = time.monotonic()

    def unfinished(self) -> dict[str, Any]:
        return {name: h for name, h in self.handles.items() if name not in self.outcomes}

    def wait(self) -> dict[str, RunOutcome]:
        next_report = time.monotonic() + self.settings.report_s
        while self.unfinished():
            self.poll()
            if self.unfinished() and time.monotonic() >= next_report:
                self.report()
                next_report = time.monotonic() + self.settings.report_s
            if self.unfinished():
                time.sleep(self.settings.poll_s)
        return self.outcomes

    def poll(self) -> None:
        pending = self.unfinished()
        states = self.states(pending)
        for name, handle in pending.items():
            job_id = str(handle.job_id)
            if self.has_result(handle):
                self.finish(name, self.result_outcome(name, handle))
                continue
            state, reason = states.get(job_id, ("", ""))
            if state != self.last_state.get(name, ("", ""))[0] and state:
                self.log(f"[{name}] slurm job {job_id} {state}" + (f" ({reason})" if state == "PENDING" else ""))
            self.last_state[name] = (state, reason)
            if state == "PENDING" and reason in IMPOSSIBLE_REASONS:
                self.cancel([job_id])
                self.fail(name, job_id, f"can never start: pending for {reason} (the request exceeds what the "
                                        f"partition offers); cancelled")
            elif not state or state in FINAL_STATES:
                since = self.gone_since.setdefault(name, time.monotonic())
                if time.monotonic() - since >= self.settings.grace_s:
                    self.fail(name, job_id, self.vanished_cause(handle, state) + "; it wrote no result")

    def states(self, handles: dict[str, Any]) -> dict[str, tuple[str, str]]:
        if self.on_slurm:
            return queue_states([str(h.job_id) for h in handles.values()])
        out = {}
        for h in handles.values():
            state = h.state
            out[str(h.job_id)] = ("RUNNING", "") if state in ("RUNNING", "QUEUED", "UNKNOWN") else (state, "")
        return out

    @staticmethod
    def has_result(handle) -> bool:
        from submitit.local.debug import DebugJob

        return handle.done() if isinstance(handle, DebugJob) else handle.paths.result_pickle.exists()

    def log_text(self, handle) -> str:
        parts = []
        for path in (handle.paths.stderr, handle.paths.stdout):
            with contextlib.suppress(OSError):
                parts.append(Path(path).read_text(errors="replace")[-20000:])
        return "\n".join(parts)

    def vanished_cause(self, handle, state: str) -> str:
        accounted = final_accounted_state(str(handle.job_id)) if self.on_slurm else None
        if accounted and accounted in CAUSES and accounted not in ("COMPLETED", "FAILED"):
            return CAUSES[accounted]
        named = cause_in_log(self.log_text(handle))
        if named:
            return named
        if state in CAUSES:
            return CAUSES[state]
        return CAUSES.get(accounted or "", "the job left the queue")

    def result_outcome(self, name: str, handle) -> RunOutcome:
        job = self.jobs[name]
        try:
            outcome = handle.result()
        except Exception as err:  # noqa: BLE001 -- the job's own process failed outside the pipeline
            outcome = RunOutcome(job.name, job.run_dir, ok=False, seconds=0.0, error=f"{type(err).__name__}: {err}")
        if not outcome.ok and self.on_slurm:
            named = cause_in_log(self.log_text(handle))  # e.g. scancel: the kernel died of the SIGTERM
            if named:
                outcome.error = f"{named} (slurm job {handle.job_id}); inside the job: {outcome.error}"
        return outcome

    def finish(self, name: str, outcome: RunOutcome) -> None:
        self.outcomes[name] = outcome
        job_id = self.handles[name].job_id
        self.log(f"[{name}] finished (slurm job {job_id})" if outcome.ok
                 else f"[{name}] FAILED (slurm job {job_id}): {outcome.error}")

    def fail(self, name: str, job_id: str, cause: str) -> None:
        job = self.jobs[name]
        self.finish(name, RunOutcome(job.name, job.run_dir, ok=False, seconds=0.0, error=f"slurm job {job_id}: {cause}"))

    def report(self) -> None:
        minutes = (time.monotonic() - self.start) / 60
        for name in self.unfinished():
            state, reason = self.last_state.get(name, ("", ""))
            shown = f"{state} ({reason})" if state == "PENDING" else state or "not in the queue yet"
            self.log(f"[{name}] slurm job {self.handles[name].job_id}: {shown}, {minutes:.1f} min since the watch began")

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        if self.on_slurm:
            _run(["scancel", *job_ids])
            return
        for name, handle in self.unfinished().items():
            if str(handle.job_id) in job_ids:
                with contextlib.suppress(Exception):
                    handle.cancel(check=False)


@contextlib.contextmanager
def cancel_on_interrupt(watch: SlurmWatch):
    """SIGINT / SIGTERM of the controller: cancel the grid's unfinished jobs, then stop."""
    def terminate(signum, frame):  # noqa: ARG001 -- signal handler signature
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: no handler, the jobs are cancelled on KeyboardInterrupt only
        previous = None
    try:
        yield
    except KeyboardInterrupt:
        ids = [str(h.job_id) for h in watch.unfinished().values()]
        watch.cancel(ids)
        watch.log(f"interrupted: cancelled slurm job(s) {', '.join(ids) or '(none left)'}; "
                  f"run the same command again to resubmit what did not finish")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
