"""The stage contract: one registry of stages, one rule for "current", one protocol for every notebook.

Every numbered notebook runs its stage with the same two lines (docs/stage-contract.md)::

    from hiralign.stages import run_stage, stage_parameters
    result = run_stage("03_warp", run_dir, stage_parameters(globals()), force=force)

:func:`run_stage` checks the inputs (the parameters, and that every upstream record exists and is
readable; a missing one is an error naming the notebook that makes it), then either loads the stage's
record when it is current or computes it under the run-folder lock, and returns the stage's typed
artifact. A record is **current** when (:func:`status`) it is readable and its content matches its
digest, it was made with the same parameters, and every upstream record and file it was made from
still has the digest recorded in it. ``hiralign run`` asks the same :func:`status`; its
``pipeline.json`` only logs what ran.

Each stage's implementation module provides ``check(params)`` (validate values and paths, cheap, no
work: ``hiralign run`` calls it for every stage before the first one runs), ``compute(stage)`` (read
the upstream artifacts through the :class:`Stage`, write the record, return the typed artifact) and
``load(store)`` (read the typed artifact back).
"""
from __future__ import annotations

import fcntl
import importlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping

from hiralign.errors import UserError
from hiralign.store import (ArtifactError, Header, RunStore, canonical_params, file_digest, param_differences,
                            read_artifact, read_header, resolve_run_dir)

#: Notebook parameters that never change what a stage computes: left out of its recorded parameters.
NON_PARAMETERS = ("run_dir", "force", "interactive")
LOCK_FILE = ".hiralign.lock"
#: Environment variable through which ``hiralign run`` lends its run-folder lock to the notebook kernels.
LOCK_TOKEN_ENV = "HIRALIGN_LOCK_TOKEN"


class ParameterError(UserError, ValueError):
    """A stage parameter has a bad value; the message names the stage, the parameter and what is allowed."""


class MissingUpstreamError(ArtifactError):
    """A stage's input record is absent; the message names the notebook that makes it."""


class RunLockedError(UserError, RuntimeError):
    """Another process is writing into the same run folder."""


@dataclass(frozen=True)
class StageSpec:
    """One stage: its notebook, its record, what it reads and every file it writes.

    ``upstream`` stages must exist; ``optional`` ones are read whenever they exist (a record made
    before one appeared is stale). Inputs a stage reads only for some parameters (04 reads 03_warp
    for the compositions that need synthesized HSIs) are neither: they are checked when recorded.
    """

    name: str
    record: str
    module: str
    upstream: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    schema: int = 1  # layout version of the record (docs/ARTIFACTS.md): a record of another version is stale
    replicated: bool = True  # takes a replicate's derived seed (hiralign.replicates); the data stage does not

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.name}.ipynb"

    def required(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The upstream stages a run with ``params`` must read: none when it asks for demo inputs."""
        return () if params.get("demo") else self.upstream

    @property
    def record_file(self) -> str:
        return f"{self.record}.h5"

    def implementation(self) -> ModuleType:
        return importlib.import_module(self.module)


#: The stages in execution order.
STAGES: dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("00_data", "00_data", "hiralign.data.stage", outputs=("00_*",), replicated=False),
    StageSpec("01_proxy", "01_proxy", "hiralign.proxy", upstream=("00_data",), outputs=("01_*",)),
    StageSpec("02_rgb_guides", "02_guides", "hiralign.guides.stage", upstream=("01_proxy",), outputs=("02_*",), schema=2),
    StageSpec("03_warp", "03_warp", "hiralign.warp.stage", upstream=("01_proxy", "02_rgb_guides"), outputs=("03_*",),
              schema=2),
    StageSpec("04_finetune", "04_finetune", "hiralign.finetune", upstream=("01_proxy",), outputs=("04_*",)),
    StageSpec("05_evaluate", "05_evaluate", "hiralign.evaluate", upstream=("00_data", "01_proxy", "04_finetune"),
              optional=("02_rgb_guides", "03_warp"), outputs=("05_*",), schema=2),
)}


def spec(name: str) -> StageSpec:
    """The :class:`StageSpec` of a stage name (``ParameterError`` listing the known ones)."""
    if name not in STAGES:
        raise ParameterError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}")
    return STAGES[name]


def stage_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of a notebook: every name annotated in its ``parameters`` cell, with its value.

    Called as ``stage_parameters(globals())`` in a notebook: the parameters cell is the only cell with
    annotated assignments (tests/test_notebooks.py checks it), so ``__annotations__`` lists exactly its
    names; papermill's injected values have replaced the defaults by then.
    """
    names = namespace.get("__annotations__", {})
    return {name: namespace[name] for name in names if name not in NON_PARAMETERS and name in namespace}


def recorded_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as a record stores them: canonical JSON values, without the :data:`NON_PARAMETERS`."""
    return json.loads(canonical_params({k: v for k, v in params.items() if k not in NON_PARAMETERS}))


# ----------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class Status:
    """Whether a stage's record is current, and if not, why (one line naming what changed)."""

    current: bool
    reason: str


def current_digest(run_dir: Path, entry: Mapping[str, str]) -> str:
    """The digest an upstream entry ``{"path", "digest"}`` has now: a record's header digest, a file's sha."""
    path = Path(entry["path"])
    path = path if path.is_absolute() else run_dir / path
    if not path.exists():
        return "<missing>"
    if path.suffix == ".h5":
        try:
            return read_header(path).digest
        except ArtifactError:
            return "<unreadable>"
    return file_digest(path)


def upstream_changes(run_dir: Path, header: Header) -> list[str]:
    """Upstream entries of a record whose digest differs from the one recorded (each as one phrase)."""
    changed = []
    for name, entry in sorted(header.upstream.items()):
        now = current_digest(run_dir, entry)
        if now != entry["digest"]:
            state = now.strip("<>") if now.startswith("<") else f"changed ({entry['digest']} -> {now})"
            changed.append(f"upstream {name} {state}")
    return changed


def status(run_dir: Path | str, name: str, params: Mapping[str, Any]) -> Status:
    """Is the record of stage ``name`` in ``run_dir`` current for ``params``? (module docstring)."""
    stage = spec(name)
    run_dir = resolve_run_dir(run_dir)
    path = run_dir / stage.record_file
    if not path.exists():
        return Status(False, f"{path.name} does not exist")
    try:
        header = read_artifact(path).header
    except ArtifactError as err:
        return Status(False, str(err))
    schema = int(header.attrs.get("schema", 1))
    if schema != stage.schema:
        return Status(False, f"{path.name} has the record layout v{schema}; this code writes v{stage.schema}")
    wanted = recorded_parameters(params)
    if header.params != wanted:
        return Status(False, f"{path.name} was made with other parameters ({'; '.join(param_differences(header.params, wanted))})")
    reasons = upstream_changes(run_dir, header)
    missing = [u for u in stage.required(wanted) if u not in header.upstream]
    reasons += [f"upstream {u} was not recorded" for u in missing]
    appeared = [u for u in stage.optional if not wanted.get("demo") and u not in header.upstream
                and (run_dir / STAGES[u].record_file).exists()]
    reasons += [f"upstream {u} exists now but was not used" for u in appeared]
    if reasons:
        return Status(False, f"{path.name} is stale: {'; '.join(reasons)}")
    return Status(True, f"{path.name} is current")


# ----------------------------------------------------------------------------- the run-folder lock


class RunLock:
    """Exclusive right to write into a run folder: an OS file lock (``flock``) on ``<run_dir>/.hiralign.lock``.

    The lock file names its holder (pid, host, command, start time). A second writer stops at once
    with a :class:`RunLockedError` naming the holder (or waits up to ``wait`` seconds). The operating
    system releases the lock when its holder dies, SIGKILL included, so a killed run never blocks the
    next one. The holder lends its lock to child processes (the notebook kernels of ``hiralign run``)
    through :data:`LOCK_TOKEN_ENV`: a process whose environment carries the holder's token enters
    without locking. Acquiring also removes the temporary files a killed writer left behind.
    """

    def __init__(self, run_dir: Path | str, command: str = "", wait: float = 0.0):
        self.path = resolve_run_dir(run_dir) / LOCK_FILE
        self.command = command
        self.wait = wait
        self.owned = False
        self.token = ""
        self._fd: int | None = None

    def holder(self) -> dict | None:
        """Who holds (or last held) the lock, as its lock file says."""
        try:
            return json.loads(self.path.read_text() or "null")
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _lent(self) -> bool:
        holder = self.holder() or {}
        return bool(holder.get("token")) and holder.get("token") == os.environ.get(LOCK_TOKEN_ENV)

    def _try_lock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd, self.token = fd, uuid.uuid4().hex
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "token": self.token,
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return True

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait
        while True:
            if self._lent():
                return self  # lent by the parent process (hiralign run executing this notebook)
            if self._try_lock():
                self.owned = True
                remove_partial_writes(self.path.parent)
                return self
            if time.monotonic() >= deadline:
                who = self.holder() or {}
                raise RunLockedError(
                    f"run folder {self.path.parent} is in use by pid {who.get('pid', '?')} on {who.get('host', '?')} "
                    f"({who.get('command') or 'a notebook'}, since {who.get('since', '?')}); wait for it to finish "
                    f"or stop it (hiralign run --wait SECONDS waits)")
            time.sleep(0.5)

    def release(self) -> None:
        if self.owned and self._fd is not None:
            os.ftruncate(self._fd, 0)  # the file stays: unlinking a locked file races with the next writer
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd, self.owned = None, False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes (``.<name>.<random>.tmp``)."""
    partial = [p for p in run_dir.glob(".*.tmp") if p.is_file()]
    for p in partial:
        p.unlink(missing_ok=True)
    return partial


# ----------------------------------------------------------------------------- the protocol


@dataclass
class Stage:
    """One stage of one run, as its implementation sees it: parameters, upstream reads, the write.

    Every upstream artifact read through :meth:`read` and every file declared with :meth:`use_file`
    is recorded with its digest in the header :meth:`write` produces.
    """

    name: str
    run_dir: Path | str
    params: dict
    force: bool = False
    log: Callable[[str], None] = print
    used: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec = spec(self.name)
        self.store = RunStore(self.run_dir)
        self.run_dir = self.store.run_dir
        self.params = recorded_parameters(self.params)

    def check_inputs(self) -> None:
        """Every upstream record exists (else :class:`MissingUpstreamError` naming its notebook)."""
        for up in self.spec.required(self.params):
            if not self.has(up):
                raise missing_upstream(self.run_dir, up, needed_by=self.name)

    def status(self) -> Status:
        return status(self.run_dir, self.name, self.params)

    def has(self, upstream: str) -> bool:
        return self.store.exists(STAGES[upstream].record)

    def read(self, upstream: str):
        """The verified record of an upstream stage (its digest is recorded as an input of this stage)."""
        if not self.has(upstream):
            raise missing_upstream(self.run_dir, upstream, needed_by=self.name)
        art = self.store.read(STAGES[upstream].record)
        self.used[upstream] = {"path": art.path.name, "digest": art.header.digest}
        return art

    def depends_on(self, upstream: str) -> None:
        """Record an upstream stage whose record library code reads (and verifies) itself, by its header digest."""
        if not self.has(upstream):
            raise missing_upstream(self.run_dir, upstream, needed_by=self.name)
        header = self.store.header(STAGES[upstream].record)
        self.used[upstream] = {"path": header.path.name, "digest": header.digest}

    def use_file(self, key: str, path: Path | str) -> None:
        """Record an input file (e.g. the source checkpoint) by its digest."""
        path = Path(path)
        try:
            shown = str(path.relative_to(self.run_dir))
        except ValueError:
            shown = str(path.resolve())
        self.used[key] = {"path": shown, "digest": file_digest(path)}

    def write(self, data: Mapping[str, Any], attrs: Mapping[str, Any] | None = None,
              files: tuple[Path | str, ...] = ()) -> Header:
        """Write the record with this stage's parameters, the inputs it used and its side ``files``."""
        digests = {Path(f).name: file_digest(f) for f in files}
        header = self.store.write(self.spec.record, data, self.params, attrs={**(attrs or {}), "schema": self.spec.schema},
                                  upstream=self.used, files=digests, stage=self.name)
        self.log(f"wrote {header.path}")
        return header


def missing_upstream(run_dir: Path | str, upstream: str, needed_by: str) -> MissingUpstreamError:
    """The error for an absent upstream record: names the file and the notebook that makes it."""
    path = resolve_run_dir(run_dir) / STAGES[upstream].record_file
    return MissingUpstreamError(
        f"{needed_by}: {path} is missing; run {STAGES[upstream].notebook} with run_dir={run_dir} first "
        f"(or `hiralign run PARAMS --until {upstream}`)")


def require(stage: str, params: Mapping[str, Any], key: str, ok: Callable[[Any], bool], what: str) -> None:
    """One parameter check of a stage's ``check``: when ``params`` has ``key``, ``ok(value)`` must hold.

    Checks look only at the parameters present, so a stage's checks serve any notebook that shares
    some of its parameter names (the test suite's stand-in notebooks among them).
    """
    if key in params and not ok(params[key]):
        raise ParameterError(f"{stage}: {key} must be {what}, got {params[key]!r}")


def check_parameters(name: str, params: Mapping[str, Any]) -> None:
    """The stage implementation's own checks of parameter values and paths (no work is done)."""
    check = getattr(spec(name).implementation(), "check", None)
    if check is not None:
        check(dict(params))


def run_stage(name: str, run_dir: Path | str, params: Mapping[str, Any], force: bool = False,
              log: Callable[[str], None] = print):
    """Check inputs -> load the current record, or compute it under the run-folder lock -> typed artifact."""
    stage = Stage(name, run_dir, dict(params), force=force, log=log)
    check_parameters(name, params)
    stage.check_inputs()
    impl = stage.spec.implementation()
    state = stage.status()
    if state.current and not force:
        log(f"{state.reason} (same parameters and inputs): loaded it")
        return impl.load(stage.store)
    log(f"{name}: {'forced' if force and state.current else state.reason}; computing")
    with RunLock(stage.run_dir, command=f"notebook {name}"):
        return impl.compute(stage)
