"""Run directory and HDF5 stage artifacts (docs/stage-contract.md, schemas in docs/ARTIFACTS.md).

Every stage writes one HDF5 *record* ``<run_dir>/<record>.h5``. Its attributes form the
:class:`Header`: the stage name, its parameters (canonical JSON), the content digest of what it holds,
the digests of the artifacts and files it was made from (``upstream``), the digests of the side files
it wrote (``files``, e.g. checkpoints), the code version and the creation time.

Writes are atomic (a temporary file in the same folder, then a rename), so a crash or a SIGKILL never
leaves a partial record under the real name. Reading verifies the content against the recorded
digest, so a damaged file is reported, never served. Whether a record is *current* is decided in one
place, :func:`hiralign.stages.status`, used by the notebooks and by ``hiralign run`` alike.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

import hiralign
from hiralign.errors import UserError


class ArtifactError(UserError, RuntimeError):
    """An artifact is missing, corrupt or unreadable; the message names the file and what to do."""


#: Attributes of the header; every other attribute is stage-specific content.
HEADER_KEYS = ("stage", "params", "digest", "upstream", "files", "code_version", "created")
#: Types :func:`plain_value` turns into JSON values.
PLAIN_TYPES = (np.generic, np.ndarray, Path)


def plain_value(value: Any) -> Any:
    """A numpy scalar/array or a path as a JSON value; ``TypeError`` for anything else JSON cannot hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"value {value!r} is not JSON-serialisable")


def canonical_params(params: Mapping[str, Any]) -> str:
    """Parameters as canonical JSON (sorted keys, numpy scalars/arrays as plain values)."""
    return json.dumps(dict(params), sort_keys=True, default=plain_value)


def param_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable list of keys whose values differ between two parameter dicts."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys if old.get(k) != new.get(k)]


def code_version() -> dict[str, str]:
    """The package version and, when the source tree is a git checkout, its commit (read-only query)."""
    version = {"hiralign": hiralign.__version__}
    root = Path(hiralign.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            version["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass  # no git or not a checkout: the package version is all there is
    return version


# ----------------------------------------------------------------------------- content digests


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def content_digest(tree: Mapping[str, Any], attrs: Mapping[str, Any] | None = None, files: Mapping[str, str] | None = None) -> str:
    """SHA-256 (16 hex digits) of a data tree, its content attributes and its side-file digests.

    Strings and lists of strings hash by their UTF-8 text, everything else by dtype, shape and bytes,
    so a tree hashes the same before writing and after reading back.
    """
    h = hashlib.sha256()
    for key, value in _leaves(tree):
        h.update(key.encode() + b"\0")
        if isinstance(value, str):
            h.update(b"s" + value.encode())
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            h.update(b"S" + "\0".join(value).encode())
        else:
            try:
                arr = np.ascontiguousarray(np.asarray(value))
            except ValueError as err:  # ragged nested lists
                raise TypeError(f"cannot store {key!r}: not a rectangular array ({err})") from err
            if arr.dtype == object:
                raise TypeError(f"cannot store {key!r}: object array (ragged list?)")
            h.update(f"{arr.dtype.str}{arr.shape}".encode() + arr.tobytes())
    h.update(canonical_params({k: v for k, v in (attrs or {}).items()}).encode())
    h.update(canonical_params(dict(files or {})).encode())
    return h.hexdigest()[:16]


def file_digest(path: Path | str) -> str:
    """SHA-256 (16 hex digits) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- HDF5 trees


def _write_tree(group: h5py.Group, tree: Mapping[str, Any]) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            _write_tree(group.create_group(key), value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            group.create_dataset(key, data=np.array(value, dtype=h5py.string_dtype()))
        elif isinstance(value, str):
            group.create_dataset(key, data=value, dtype=h5py.string_dtype())
        else:  # content_digest, computed first, has rejected ragged and object arrays
            arr = np.asarray(value)
            big = arr.ndim > 0 and arr.size > 1024
            group.create_dataset(key, data=arr, compression="gzip" if big else None, compression_opts=1 if big else None)


def _read_tree(group: h5py.Group) -> dict:
    out: dict = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_tree(item)
        elif h5py.check_string_dtype(item.dtype) is not None:
            value = item.asstr()[()]
            out[key] = value.tolist() if isinstance(value, np.ndarray) else value
        else:
            out[key] = item[()]
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- header and artifacts


@dataclass(frozen=True)
class Header:
    """What a record says about itself: made by ``stage`` with ``params`` from ``upstream``.

    ``upstream`` maps a name (an upstream stage, or ``checkpoint``) to ``{"path", "digest"}``;
    ``files`` maps side files written next to the record to their digests; ``attrs`` holds the
    stage-specific content attributes (covered by ``digest``).
    """

    path: Path
    stage: str
    params: dict
    digest: str
    upstream: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    code_version: str = ""
    created: str = ""
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    """A record read back (and verified): nested ``data`` (dicts of numpy arrays) and its header."""

    header: Header
    data: dict

    @property
    def path(self) -> Path:
        return self.header.path

    @property
    def params(self) -> dict:
        return self.header.params

    @property
    def attrs(self) -> dict:
        return self.header.attrs

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def keys(self):
        return self.data.keys()


def _attr(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _corrupt(path: Path, err: Exception | str) -> ArtifactError:
    return ArtifactError(f"artifact {path} is corrupt or truncated ({err}); delete it and rerun its stage")


def write_artifact(path: Path | str, data: Mapping[str, Any], params: Mapping[str, Any], stage: str = "",
                   attrs: Mapping[str, Any] | None = None, upstream: Mapping[str, Mapping[str, str]] | None = None,
                   files: Mapping[str, str] | None = None) -> Header:
    """Write ``data`` (nested dict of arrays) with its header to HDF5 at ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = dict(attrs or {})
    clash = sorted(set(attrs) & set(HEADER_KEYS))
    if clash:
        raise ValueError(f"attributes {clash} are reserved for the header")
    digest = content_digest(data, attrs, files)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    header = Header(path=path, stage=stage or path.stem, params=json.loads(canonical_params(params)), digest=digest,
                    upstream={k: dict(v) for k, v in (upstream or {}).items()}, files=dict(files or {}),
                    code_version=canonical_params(code_version()), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    attrs=attrs)
    try:
        with h5py.File(tmp, "w") as f:
            _write_tree(f, data)
            f.attrs["stage"] = header.stage
            f.attrs["params"] = canonical_params(header.params)
            f.attrs["digest"] = digest
            f.attrs["upstream"] = json.dumps(header.upstream, sort_keys=True)
            f.attrs["files"] = json.dumps(header.files, sort_keys=True)
            f.attrs["code_version"] = header.code_version
            f.attrs["created"] = header.created
            for key, value in attrs.items():
                f.attrs[key] = value
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return header


def _header_from_attrs(path: Path, raw: Mapping[str, Any]) -> Header:
    for key in ("params", "digest"):
        if key not in raw:
            raise _corrupt(path, f"no '{key}' attribute: not a hiralign record, or written by an older version")
    return Header(path=path, stage=str(raw.get("stage", path.stem)), params=json.loads(raw["params"]),
                  digest=str(raw["digest"]), upstream=json.loads(raw.get("upstream", "{}")),
                  files=json.loads(raw.get("files", "{}")), code_version=str(raw.get("code_version", "")),
                  created=str(raw.get("created", "")),
                  attrs={k: _attr(v) for k, v in raw.items() if k not in HEADER_KEYS})


def read_header(path: Path | str) -> Header:
    """The header of a record (cheap: attributes only); :class:`ArtifactError` if missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"artifact {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            return _header_from_attrs(path, dict(f.attrs))
    except ArtifactError:
        raise
    except Exception as err:  # damaged files surface as OSError, RuntimeError, KeyError, JSON errors ...
        raise _corrupt(path, f"{type(err).__name__}: {err}") from err


def read_params(path: Path | str) -> dict:
    """The parameters a record was made with (raises :class:`ArtifactError` if unreadable)."""
    return read_header(path).params


def verify_files(header: Header) -> None:
    """Check every side file of a record exists with the digest it was written with."""
    for name, digest in header.files.items():
        side = header.path.parent / name
        if not side.exists():
            raise ArtifactError(f"{side} (written with {header.path.name}) is missing; rerun stage {header.stage}")
        if file_digest(side) != digest:
            raise ArtifactError(f"{side} changed since {header.path.name} was written (digest differs); rerun stage {header.stage}")


def read_artifact(path: Path | str) -> Artifact:
    """Read a record and verify its content and side files against the recorded digests."""
    header = read_header(path)
    try:
        with h5py.File(header.path, "r") as f:
            data = _read_tree(f)
    except Exception as err:  # h5py reports damaged structures as OSError, RuntimeError, KeyError or worse
        raise _corrupt(header.path, f"{type(err).__name__}: {err}") from err
    if content_digest(data, header.attrs, header.files) != header.digest:
        raise _corrupt(header.path, "its content does not match the digest it was written with")
    verify_files(header)
    return Artifact(header=header, data=data)


# ----------------------------------------------------------------------------- the run folder


def project_root(start: Path | None = None) -> Path | None:
    """The hiralign checkout containing ``start`` (default: cwd): a folder with ``notebooks/`` and
    ``pyproject.toml``, searched upwards; None outside a checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return None


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename: a reader
    never sees a half-written file (the folder is created if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def project_path(path: Path | str) -> Path:
    """A path as the project's parameters mean it: a relative one (a glob pattern too) is taken relative to
    the project root, so ``runs/demo`` or ``../cave`` name the same place from JupyterLab (cwd
    ``notebooks/``), from papermill in the repo root and from the CLI; outside a checkout, relative to the cwd."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    root = project_root()
    return Path(os.path.normpath(root / path)) if root is not None else path.resolve()


def resolve_run_dir(run_dir: Path | str) -> Path:
    """The run folder: a relative ``run_dir`` is relative to the project root (:func:`project_path`)."""
    return project_path(run_dir)


class RunStore:
    """A run directory ``runs/<name>/`` holding one HDF5 record per stage.

    A relative ``run_dir`` is resolved against the project root (:func:`resolve_run_dir`).
    """

    def __init__(self, run_dir: Path | str):
        self.run_dir = resolve_run_dir(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def path(self, record: str) -> Path:
        """File of a record: ``'01_proxy'`` -> ``<run_dir>/01_proxy.h5`` (a name with a suffix is kept)."""
        return self.run_dir / (record if Path(record).suffix else f"{record}.h5")

    def exists(self, record: str) -> bool:
        return self.path(record).exists()

    def header(self, record: str) -> Header:
        return read_header(self.path(record))

    def write(self, record: str, data: Mapping[str, Any], params: Mapping[str, Any], attrs: Mapping[str, Any] | None = None,
              upstream: Mapping[str, Mapping[str, str]] | None = None, files: Mapping[str, str] | None = None,
              stage: str = "") -> Header:
        return write_artifact(self.path(record), data, params, stage=stage or record, attrs=attrs, upstream=upstream, files=files)

    def read(self, record: str) -> Artifact:
        return read_artifact(self.path(record))

    def __repr__(self) -> str:
        records = sorted(p.name for p in self.run_dir.glob("*.h5"))
        return f"RunStore({str(self.run_dir)!r}, artifacts={records})"
