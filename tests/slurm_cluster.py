"""A real single-node SLURM cluster for the tests (``make test-slurm``): munge, slurmctld and slurmd
(and, with job accounting, a MariaDB server and slurmdbd) from the distribution's packages,
configured and started in a temporary folder, stopped on exit.

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

#: Debian packages of the daemons and client commands (installed by :func:`install_packages`);
#: job accounting adds slurmdbd and its MariaDB.
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
ACCOUNTING_PACKAGES = ("slurmdbd", "mariadb-server")
DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
ACCOUNTING_DAEMONS = {"mariadbd": "/usr/sbin/mariadbd", "slurmdbd": "/usr/sbin/slurmdbd"}
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "sacct")
PARTITION = "debug"


def missing_programs(accounting: bool = False) -> list[str]:
    wanted = (*DAEMONS.values(), *CLIENTS, *(ACCOUNTING_DAEMONS.values() if accounting else ()))
    return [p for p in wanted if shutil.which(p) is None]


def install_packages(accounting: bool = False, timeout: float = 600) -> str:
    """Install :data:`PACKAGES` (and :data:`ACCOUNTING_PACKAGES`) with apt-get when they are missing
    (root only); '' or why not."""
    if not missing_programs(accounting):
        return ""
    if os.geteuid() != 0:
        return "SLURM is not installed and installing it needs root"
    if shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    packages = [*PACKAGES, *(ACCOUNTING_PACKAGES if accounting else ())]
    for command in (["apt-get", "install", "-y", "-q", *packages], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", *packages]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode == 0 and command[1] == "install":
            break
    still = missing_programs(accounting)
    return f"apt-get could not install {', '.join(still)}" if still else ""


def unavailable(accounting: bool = False) -> str:
    """Why a cluster cannot be started here ('' when it can)."""
    if os.geteuid() != 0:
        return "a real SLURM cluster needs root (slurmd, munge key ownership)"
    return install_packages(accounting)


def _host() -> str:
    return socket.gethostname().split(".")[0]


def _conf(root: Path, cpus: int, memory_mb: int, dbd_port: int | None) -> str:
    host = _host()
    # AccountingStoragePass: the munge socket for the connections to slurmdbd (AuthInfo is not used there)
    storage = (f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
               f"AccountingStoragePort={dbd_port}\nAccountingStoragePass={root}/munge/munge.socket\n"
               if dbd_port else "AccountingStorageType=accounting_storage/none\n")
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
{storage}MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(command: list[str], log: Path, env: dict | None = None) -> None:
    with open(log, "ab") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=60, env=env)


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
def cluster(root: Path, cpus: int = 2, memory_mb: int = 4000, accounting: bool = False):
    """Start munged, slurmctld and slurmd configured under ``root``; yield the environment the
    client commands need (``SLURM_CONF``); stop the daemons on exit. Without ``accounting``
    ``sacct`` answers "accounting storage is disabled", as on many small clusters; with it a
    MariaDB server and slurmdbd run under ``root`` too and ``sacct`` reports every job."""
    root = Path(root)
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    dbd_port = _free_port() if accounting else None
    conf.write_text(_conf(root, cpus, memory_mb, dbd_port))
    env = dict(os.environ, SLURM_CONF=str(conf))
    pids: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        try:
            _start([DAEMONS["munged"], "--force", f"--key-file={key}", f"--socket={root}/munge/munge.socket",
                    f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munge/seed"],
                   root / "munged.log")
            pids["munged"] = root / "munged.pid"
            if accounting:
                stack.enter_context(_database(root / "db"))
                pids["slurmdbd"] = root / "slurmdbd.pid"
                _start_slurmdbd(root, env, dbd_port)
            _start([DAEMONS["slurmctld"], "-f", str(conf), "-i"], root / "slurmctld.start.log")
            pids["slurmctld"] = root / "slurmctld.pid"
            _start([DAEMONS["slurmd"], "-f", str(conf)], root / "slurmd.start.log")
            pids["slurmd"] = root / "slurmd.pid"
            _wait_until(lambda: _node_idle(env), 60, "the node did not become idle", root / "slurmctld.log")
            yield env
        finally:
            subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=20)
            for name in ("slurmd", "slurmctld", "slurmdbd", "munged"):
                if name in pids:
                    _stop(pids[name])


#: The accounting database's user (local to the temporary MariaDB server).
DB_USER, DB_PASSWORD = "slurm", "hiralign-test"


@contextlib.contextmanager
def _database(folder: Path):
    """A MariaDB server of its own in ``folder`` (TCP on 127.0.0.1 only), with slurmdbd's user."""
    folder.mkdir(parents=True, exist_ok=True)
    _start(["mariadb-install-db", "--no-defaults", f"--datadir={folder}/data", "--user=root",
            "--auth-root-authentication-method=socket"], folder / "install.log")
    port = _free_port()
    (folder / "port").write_text(str(port))
    with open(folder / "server.log", "ab") as log:
        server = subprocess.Popen([ACCOUNTING_DAEMONS["mariadbd"], "--no-defaults", f"--datadir={folder}/data",
                                   f"--socket={folder}/db.sock", f"--pid-file={folder}/db.pid", f"--port={port}",
                                   "--bind-address=127.0.0.1", "--user=root"], stdout=log, stderr=subprocess.STDOUT)
    try:
        client = ["mariadb", "--no-defaults", "-S", f"{folder}/db.sock", "-u", "root", "-e"]
        _wait_until(lambda: subprocess.run([*client, "SELECT 1"], capture_output=True, timeout=10).returncode == 0,
                    60, "MariaDB did not accept connections", folder / "server.log")
        subprocess.run([*client, f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; "
                                 f"GRANT ALL ON slurm_acct_db.* TO '{DB_USER}'@'127.0.0.1';"], check=True, timeout=30)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _start_slurmdbd(root: Path, env: dict, port: int) -> None:
    """slurmdbd on ``port`` (its configuration beside slurm.conf, mode 600 as it demands), and the
    cluster registered in it."""
    dbd = root / "slurmdbd.conf"
    dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
DbdHost={_host()}
DbdAddr=127.0.0.1
DbdPort={port}
SlurmUser=root
PidFile={root}/slurmdbd.pid
LogFile={root}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={(root / "db" / "port").read_text()}
StorageUser={DB_USER}
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
""")
    dbd.chmod(0o600)
    _start([ACCOUNTING_DAEMONS["slurmdbd"]], root / "slurmdbd.start.log", env)
    answers: list[str] = []

    def registered() -> bool:
        done = subprocess.run(["sacctmgr", "-i", "add", "cluster", "hiralign-test"], env=env, capture_output=True,
                              text=True, timeout=20)
        answers.append(done.stderr.strip())
        return done.returncode == 0 or "already exists" in done.stdout + done.stderr
    try:
        _wait_until(registered, 60, "slurmdbd did not register the cluster", root / "slurmdbd.log")
    except RuntimeError as err:
        raise RuntimeError(f"{err}\nsacctmgr: {answers[-1] if answers else ''}") from None


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
