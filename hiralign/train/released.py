"""Released checkpoints: weights saved by other code bases (``.pth`` / ``.pt`` / ``.ckpt`` / ``.tar``,
or a plain ``.safetensors``), loaded into a hiralign model with an exact report of what matched.

What a released file may look like, and what :func:`read_state_dict` does with it:

* a bare ``state_dict`` (``torch.save(model.state_dict())``);
* a dictionary nesting it under one of :data:`NESTING_KEYS` -- ``state_dict`` (PyTorch Lightning,
  whose keys then carry the LightningModule's attribute, e.g. ``model.``), ``net`` / ``model`` /
  ``network`` (many official repositories), ``params`` / ``params_ema`` (BasicSR), ... -- beside
  optimiser states, epochs and so on, which are ignored;
* keys prefixed by ``module.`` (saved from ``nn.DataParallel`` / DDP) or ``_orig_mod.`` (``torch.compile``).

Files are read with ``torch.load(weights_only=True)``: a checkpoint that pickles anything but
tensors and plain containers is refused (unpickling can run arbitrary code) with a message saying
how to re-save it. :func:`load_released` strips the prefixes that make the keys fit the model,
applies an optional ``key_map`` (regular expression -> replacement, for renamed modules), and
returns a :class:`LoadReport` naming every missing, unexpected and shape-mismatched key.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from hiralign.train.checkpoint import CheckpointError

#: Keys under which checkpoints of other code bases nest the weights (tried in this order).
NESTING_KEYS = ("state_dict", "model_state_dict", "params_ema", "params", "net", "model", "network", "generator",
                "module")
#: Key prefixes added by wrappers and training frameworks, stripped when that makes keys fit the model.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.", "network.")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, path: Path | str = "<object>") -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a loaded checkpoint and where they were found (``"['state_dict']"``, or ``""``
    for a bare state dict); non-tensor entries beside a nested state dict are ignored."""
    where = ""
    while not _is_state_dict(obj):
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
        nested = next((k for k in NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors, where
            raise CheckpointError(f"{path}: no tensors found{f' under {where}' if where else ''}; top-level keys: "
                                  f"{', '.join(map(str, list(obj)[:12]))} (expected a state dict, or one nested "
                                  f"under {', '.join(NESTING_KEYS)})")
        where += f"[{nested!r}]"
        obj = obj[nested]
    return dict(obj), where


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a released checkpoint file; returns its tensors and their nesting (see :func:`unwrap_state_dict`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), ""
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({err})") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} pickles objects other than tensors, which hiralign does not unpickle "
            f"(weights_only=True; unpickling can run code). Re-save its weights where you trust it: "
            f"torch.save(torch.load(path, weights_only=False)['<key>'], 'weights.pth') ({err})") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (truncated or corrupt? {err})") from err
    return unwrap_state_dict(obj, path)


def strip_prefixes(state: Mapping[str, torch.Tensor], wanted: set[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove :data:`WRAPPER_PREFIXES` from every key, one at a time, as long as that makes more keys
    equal to ``wanted`` (the model's keys); returns the new state and the prefixes removed."""
    state, removed = dict(state), []
    while True:
        matched = len(wanted & state.keys())
        best = None
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                trial = {k[len(prefix):]: v for k, v in state.items()}
                if len(wanted & trial.keys()) > matched:
                    best, matched = (prefix, trial), len(wanted & trial.keys())
        if best is None:
            return state, removed
        removed.append(best[0])
        state = best[1]


def map_keys(state: Mapping[str, torch.Tensor], key_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Rename keys by ``key_map`` (regular expression -> replacement, applied in order, ``re.sub``)."""
    out = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in key_map.items():
            new = re.sub(pattern, replacement, new)
        if new in out:
            raise CheckpointError(f"key_map maps two keys onto {new!r}")
        out[new] = value
    return out


@dataclass
class LoadReport:
    """What loading a released checkpoint matched: keys missing from the file, unexpected in it, and
    present in both with different shapes (``key: file shape vs model shape``)."""

    path: Path
    nesting: str = ""
    prefixes: list[str] = field(default_factory=list)
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line: counts, nesting and prefixes removed."""
        where = f" under {self.nesting}" if self.nesting else ""
        strip = f", prefixes removed: {' '.join(self.prefixes)}" if self.prefixes else ""
        return (f"{self.path.name}: {self.loaded} tensors loaded{where}{strip}; {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.mismatched)} with other shapes")

    def __str__(self) -> str:
        lines = [self.summary()]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("other shape", self.mismatched)):
            lines += [f"  {label}: {k}" for k in keys]
        return "\n".join(lines)


def load_released(model: nn.Module, path: str | Path, key_map: Mapping[str, str] | None = None,
                  strict: bool = True) -> LoadReport:
    """Load the weights of a released checkpoint into ``model`` (into ``model.net`` for a plugged
    network, :class:`hiralign.restorers.plugins.Plugged`) and report the match.

    With ``strict`` any missing, unexpected or mis-shaped key raises :class:`CheckpointError` with the
    full report and nothing is loaded; without it the matching tensors are loaded and the report
    says what was not.
    """
    from hiralign.restorers.plugins import Plugged

    target = model.net if isinstance(model, Plugged) else model
    path = Path(path)
    state, nesting = read_state_dict(path)
    own = target.state_dict()
    state, prefixes = strip_prefixes(state, set(own))
    state = map_keys(state, key_map or {})
    report = LoadReport(path, nesting, prefixes)
    report.missing = sorted(set(own) - state.keys())
    report.unexpected = sorted(state.keys() - set(own))
    report.mismatched = sorted(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state.keys() & own.keys()
                               if state[k].shape != own[k].shape)
    if strict and not report.ok:
        raise CheckpointError(f"checkpoint {path} does not fit {type(target).__name__}:\n{report}")
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    target.load_state_dict(fitting, strict=False)
    report.loaded = len(fitting)
    return report


def is_released(path: str | Path) -> bool:
    """A checkpoint file that is not a hiralign checkpoint (no hiralign config in a safetensors header)."""
    from hiralign.train.checkpoint import read_checkpoint_config

    path = Path(path)
    if path.suffix != ".safetensors":
        return True
    try:
        read_checkpoint_config(path)
    except CheckpointError:
        return True
    return False


__all__ = ["LoadReport", "NESTING_KEYS", "WRAPPER_PREFIXES", "is_released", "load_released",
           "map_keys", "read_state_dict", "strip_prefixes", "unwrap_state_dict"]
