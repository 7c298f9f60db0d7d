"""Run directory and HDF5 stage artifacts (DESIGN.md "Run directory and artifacts").

Every stage writes one HDF5 file ``<run_dir>/<stage>.h5`` whose attributes carry the stage
parameters (canonical JSON), the code version and the creation time. Writes are atomic: the file
is written under a temporary name in the same folder and renamed into place, so a crash never
leaves a partial artifact. A stage is *current* when its artifact exists and was made with the same
parameters; notebooks skip current stages unless forced.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

import hiralign


class ArtifactError(RuntimeError):
    """An artifact is missing, corrupt or unreadable; the message names the file."""


class StaleArtifactError(ArtifactError):
    """An artifact exists but was made with other parameters; the message lists the differences."""


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


@dataclass(frozen=True)
class Artifact:
    """A stage artifact read back: nested ``data`` (dicts of numpy arrays), ``params`` and ``attrs``."""

    path: Path
    data: dict
    params: dict
    attrs: dict

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def keys(self):
        return self.data.keys()


def _write_tree(group: h5py.Group, tree: Mapping[str, Any]) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            _write_tree(group.create_group(key), value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            group.create_dataset(key, data=np.array(value, dtype=h5py.string_dtype()))
        elif isinstance(value, str):
            group.create_dataset(key, data=value, dtype=h5py.string_dtype())
        else:
            try:
                arr = np.asarray(value)
            except ValueError as err:  # ragged nested lists
                raise TypeError(f"cannot store {key!r}: not a rectangular array ({err})") from err
            if arr.dtype == object:
                raise TypeError(f"cannot store {key!r}: object array (ragged list?)")
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


def write_artifact(path: Path | str, data: Mapping[str, Any], params: Mapping[str, Any], stage: str = "", attrs: Mapping[str, Any] | None = None) -> Path:
    """Write ``data`` (nested dict of arrays) to HDF5 at ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params_json = canonical_params(params)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            _write_tree(f, data)
            f.attrs["params"] = params_json
            f.attrs["code_version"] = hiralign.__version__
            f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            f.attrs["stage"] = stage or path.stem
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_params(path: Path | str) -> dict:
    """The parameters an artifact was made with (raises :class:`ArtifactError` if unreadable)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["params"])
    except FileNotFoundError:
        raise ArtifactError(f"artifact {path} does not exist") from None
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise ArtifactError(f"artifact {path} is corrupt or truncated ({err}); delete it and rerun its stage") from err


def read_artifact(path: Path | str, params: Mapping[str, Any] | None = None) -> Artifact:
    """Read an artifact; with ``params``, raise :class:`StaleArtifactError` when they differ."""
    path = Path(path)
    stored = read_params(path)
    if params is not None:
        wanted = json.loads(canonical_params(params))
        if stored != wanted:
            diff = "; ".join(param_differences(stored, wanted))
            raise StaleArtifactError(f"artifact {path} was made with other parameters ({diff}); rerun its stage")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            data = _read_tree(f)
    except OSError as err:
        raise ArtifactError(f"artifact {path} is corrupt or truncated ({err}); delete it and rerun its stage") from err
    attrs.pop("params", None)
    return Artifact(path=path, data=data, params=stored, attrs=attrs)


def project_root(start: Path | None = None) -> Path | None:
    """The hiralign checkout containing ``start`` (default: cwd): a folder with ``notebooks/`` and
    ``pyproject.toml``, searched upwards; None outside a checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return None


def resolve_run_dir(run_dir: Path | str) -> Path:
    """A relative ``run_dir`` is taken relative to the project root, so ``runs/demo`` names the same
    folder from JupyterLab (cwd ``notebooks/``), from papermill in the repo root and from the CLI."""
    path = Path(run_dir).expanduser()
    if path.is_absolute():
        return path
    root = project_root()
    return (root / path) if root is not None else path.resolve()


class RunStore:
    """A run directory ``runs/<name>/`` holding one HDF5 artifact per stage.

    A relative ``run_dir`` is resolved against the project root (:func:`resolve_run_dir`).
    """

    def __init__(self, run_dir: Path | str):
        self.run_dir = resolve_run_dir(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def path(self, stage: str) -> Path:
        """File of a stage: ``'01_proxy'`` -> ``<run_dir>/01_proxy.h5`` (a name with a suffix is kept)."""
        return self.run_dir / (stage if Path(stage).suffix else f"{stage}.h5")

    def exists(self, stage: str) -> bool:
        return self.path(stage).exists()

    def is_current(self, stage: str, params: Mapping[str, Any]) -> bool:
        """True when the stage's artifact exists, is readable and was made with ``params``."""
        if not self.exists(stage):
            return False
        try:
            return read_params(self.path(stage)) == json.loads(canonical_params(params))
        except ArtifactError:
            return False

    def write(self, stage: str, data: Mapping[str, Any], params: Mapping[str, Any], attrs: Mapping[str, Any] | None = None) -> Path:
        return write_artifact(self.path(stage), data, params, stage=stage, attrs=attrs)

    def read(self, stage: str, params: Mapping[str, Any] | None = None) -> Artifact:
        return read_artifact(self.path(stage), params)

    def __repr__(self) -> str:
        stages = sorted(p.name for p in self.run_dir.glob("*.h5"))
        return f"RunStore({str(self.run_dir)!r}, artifacts={stages})"
