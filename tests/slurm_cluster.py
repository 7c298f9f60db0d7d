"""A real single-node SLURM cluster for the tests (``make test-slurm``): munge, slurmctld and slurmd
from the distribution's packages, configured and started in a temporary folder, stopped on exit.

Nothing outside the folder is touched: the daemons get their configuration (``slurm.conf``), munge
key and socket, spool and state directories, pid and log files there, and the client commands find
the cluster through ``SLURM_CONF``. :func:`cluster` stops exactly the daemons it started (by the
pids it recorded), never others. It needs root (slurmd runs the jobs as the submitting user and
munge's key must belong to its user); :func:`unavailable` says why when the cluster cannot run.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: Debian packages of the daemons and client commands (installed by :func:`install_packages`).
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
PARTITION = "debug"


def missing_programs() -> list[str]:
    return [p for p in (*DAEMONS.values(), *CLIENTS) if shutil.which(p) is None]


def install_packages(timeout: float = 600) -> str:
    """Install :data:`PACKAGES` with apt-get when they are missing (root only); '' or why not."""
    if not missing_programs():
        return ""
    if os.geteuid() != 0:
        return "SLURM is not installed and installing it needs root"
    if shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "install", "-y", "-q", *PACKAGES], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode == 0 and command[1] == "install":
            break
    still = missing_programs()
    return f"apt-get could not install {', '.join(still)}" if still else ""


def unavailable() -> str:
    """Why a cluster cannot be started here ('' when it can)."""
    if os.geteuid() != 0:
        return "a real SLURM cluster needs root (slurmd, munge key ownership)"
    return install_packages()


def _conf(root: Path, cpus: int, memory_mb: int) -> str:
    host = socket.gethostname().split(".")[0]
    return f"""\
ClusterName=hiralign-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MessageTimeout=10
KillWait=5
InactiveLimit=0
MinJobAge=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(command: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=30)


def _wait_until(predicate, timeout: float, what: str, log: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text()[-2000:] if log.exists() else ""
    raise RuntimeError(f"{what} within {timeout:.0f} s; {log.name}:\n{tail}")


def _node_idle(env: dict) -> bool:
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=10)
    return done.returncode == 0 and done.stdout.strip().startswith("idle")


@contextlib.contextmanager
def cluster(root: Path, cpus: int = 2, memory_mb: int = 4000):
    """Start munged, slurmctld and slurmd configured under ``root``; yield the environment the
    client commands need (``SLURM_CONF``); stop the three daemons on exit. Without job accounting
    (``sacct`` answers "accounting storage is disabled"), as on many small clusters."""
    root = Path(root)
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, cpus, memory_mb))
    env = dict(os.environ, SLURM_CONF=str(conf))
    pids: dict[str, Path] = {}
    try:
        _start([DAEMONS["munged"], "--force", f"--key-file={key}", f"--socket={root}/munge/munge.socket",
                f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge/seed"],
               root / "munged.log")
        pids["munged"] = root / "munged.pid"
        _start([DAEMONS["slurmctld"], "-f", str(conf), "-i"], root / "slurmctld.start.log")
        pids["slurmctld"] = root / "slurmctld.pid"
        _start([DAEMONS["slurmd"], "-f", str(conf)], root / "slurmd.start.log")
        pids["slurmd"] = root / "slurmd.pid"
        _wait_until(lambda: _node_idle(env), 60, "the node did not become idle", root / "slurmctld.log")
        yield env
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=20)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in pids:
                _stop(pids[name])


def _stop(pid_file: Path, timeout: float = 20) -> None:
    """SIGTERM the daemon named by ``pid_file`` (only that pid), then SIGKILL if it lingers."""
    _wait_for_file(pid_file, 5)
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            os.kill(pid, 0)
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


def _wait_for_file(path: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.1)
