"""Parameter files of the paper's tables: profiles, datasets and experiments resolved into a
:class:`TableSpec` (merge order in :mod:`hiralign.reproduce`)."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from hiralign.errors import UserError
from hiralign.pipeline import STAGES

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS_ROOT = REPO_ROOT / "params" / "paper"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DEFAULTS_FILE = "_defaults.yaml"
TABLE_FILE = "_table.yaml"
PROFILES = ("paper", "mini")
#: Folder standing for the ``data/`` prefix of required paths unless ``--data-root`` names another.
DATA_ROOT = REPO_ROOT / "data"
#: Experiment-level keys handed to every notebook that declares a parameter of the same name.
INJECTED_KEYS = ("task", "backbone", "generator")
#: Stages whose parameters decide the data every later stage sees; runs equal up to here share them.
SHARED_PREFIX = ("00_data", "01_proxy", "02_rgb_guides", "03_warp")
RESULT_FILE = "05_metrics.json"
ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10, "xi": 11}
Log = Callable[[str], None]


class ReproduceError(UserError, RuntimeError):
    """A table, profile or parameter file is invalid; the message names the file and the problem."""


class MissingDatasetError(ReproduceError):
    """The paper profile needs dataset paths that do not exist (raised before anything runs)."""


def table_name(name: str) -> str:
    """``"table6"``, ``"6"``, ``"VI"`` or ``"table-vi"`` -> ``"table6"``."""
    key = re.sub(r"^table[-_ ]?", "", str(name).strip().lower())
    number = int(key) if key.isdigit() else ROMAN.get(key)
    if number is None:
        raise ReproduceError(f"unknown table {name!r}; use table1 ... table11 (or 1..11, I..XI)")
    return f"table{number}"


def list_tables(params_root: Path | str = PARAMS_ROOT) -> list[str]:
    """Tables that have a folder of experiment files, in numeric order."""
    root = Path(params_root)
    found = [p.name for p in root.glob("table*") if p.is_dir() and re.fullmatch(r"table\d+", p.name)]
    return sorted(found, key=lambda n: int(n[5:]))


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``; nested dicts merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ReproduceError(f"{path} does not exist") from None
    except yaml.YAMLError as err:
        raise ReproduceError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ReproduceError(f"{path}: expected a mapping at the top level")
    return data


@dataclass(frozen=True)
class Cell:
    """A paper cell block an experiment fills: ``row`` x ``group`` with the run's ``measure``
    (``source-only``, ``adapted``, ...) on target ``split``."""

    row: str
    group: str
    measure: str
    split: str


@dataclass
class Experiment:
    """One experiment of a table resolved for one profile."""

    table: str
    name: str
    path: Path
    profile: str
    profile_label: str
    title: str
    dataset: str  # the paper's dataset (CAVE, KAIST, HSIDwrD)
    dataset_label: str  # what this profile actually runs on
    task: str
    paper_backbone: str
    backbone: str
    generator: str
    mapping: str  # how the paper's method maps onto ours (shown in the tables)
    cells: list[Cell]
    requires: list[str]
    shared: dict[str, Any]  # device, seed
    stages: dict[str, dict[str, Any]]
    slurm: dict[str, Any] = field(default_factory=dict)
    scale: str = ""  # a scale of the profile (``_defaults.scales``), e.g. ``tiny``; empty: full size

    @property
    def run_profile(self) -> str:
        """The profile with its scale (``paper-tiny``): names the runs' folder, so scales never share runs."""
        return f"{self.profile}-{self.scale}" if self.scale else self.profile

    @property
    def our_model(self) -> str:
        return f"{self.paper_backbone} -> {self.backbone}" if self.paper_backbone else self.backbone


@dataclass
class TableSpec:
    """A table's experiments plus its rows not reproduced and the gain comparisons it makes."""

    table: str
    profile: str
    profile_label: str
    experiments: list[Experiment]
    not_reproduced: dict[str, str]
    comparisons: list[tuple[str, str]]
    notes: list[str]
    scale: str = ""
    extra_rows: list[str] = field(default_factory=list)  # rows the paper does not report, filled by us only

    @property
    def run_profile(self) -> str:
        """``profile`` or ``profile-scale`` (:attr:`Experiment.run_profile`)."""
        return f"{self.profile}-{self.scale}" if self.scale else self.profile

    def reason(self, row: str, group: str) -> str | None:
        """Why a paper cell is not reproduced: ``not_reproduced`` keyed by ``"row @ group"``, the row,
        or the group (in that order); None when the table gives no reason."""
        for key in (f"{row} @ {group}", row, group):
            if key in self.not_reproduced:
                return self.not_reproduced[key]
        return None


def _cells(raw: Sequence[dict], split: str, path: Path) -> list[Cell]:
    cells = []
    for entry in raw or []:
        try:
            cells.append(Cell(str(entry["row"]), str(entry["group"]), str(entry["measure"]), str(entry.get("split", split))))
        except KeyError as err:
            raise ReproduceError(f"{path}: every cell needs row, group and measure; {entry} lacks {err}") from None
    if not cells:
        raise ReproduceError(f"{path}: names no cells (which paper rows does it reproduce?)")
    return cells


def scale_overlay(defaults: dict, profile: str, scale: str, dataset: str) -> dict:
    """The layer a scale of ``profile`` puts over every experiment of ``dataset``: the scale's keys
    (``device``, ``slurm``, ``stages``, ``label``, ...) updated by its ``datasets[<dataset>]`` entry."""
    scales = defaults.get("scales", {}) or {}
    if scale not in scales:
        raise ReproduceError(f"{DEFAULTS_FILE}: no scale {scale!r}; scales are {sorted(scales)}")
    raw = dict(scales[scale])
    if raw.pop("profile", profile) != profile:
        raise ReproduceError(f"scale {scale!r} belongs to the {scales[scale]['profile']!r} profile, not {profile!r}")
    per_dataset = raw.pop("datasets", {}) or {}
    return deep_merge(raw, per_dataset.get(dataset, {}))


def load_experiment(path: Path, table: str, profile: str, defaults: dict, scale: str = "") -> Experiment:
    """Resolve one experiment file for ``profile`` (see the module docstring for the merge order); a
    ``scale`` (``_defaults.scales``) is laid over the result last, so it shrinks sizes, steps and
    epochs and keeps every other parameter."""
    raw = _read_yaml(path)
    profiles = raw.pop("profiles", {}) or {}
    if profile not in profiles:
        raise ReproduceError(f"{path}: no profile {profile!r}; it defines {sorted(profiles)}")
    base = defaults.get("profiles", {}).get(profile)
    if base is None:
        raise ReproduceError(f"{DEFAULTS_FILE}: no profile {profile!r}")
    dataset = str(raw.get("dataset", ""))
    datasets = defaults.get("datasets", {})
    if dataset not in datasets:
        raise ReproduceError(f"{path}: dataset {dataset!r} is not described in {DEFAULTS_FILE} ({sorted(datasets)})")
    layers = [base, datasets[dataset].get(profile, {}), raw, profiles[profile]]
    if scale:
        layers.append(scale_overlay(defaults, profile, scale, dataset))
    spec = {}
    for layer in layers:
        spec = deep_merge(spec, layer)
    spec["requires"] = list(dict.fromkeys(r for layer in layers for r in layer.get("requires", [])))  # union
    unknown = sorted(set(spec.get("stages", {})) - set(STAGES))
    if unknown:
        raise ReproduceError(f"{path}: unknown stage(s) {unknown}; stages are {list(STAGES)}")
    stages = {s: dict(spec.get("stages", {}).get(s) or {}) for s in STAGES}
    return Experiment(
        table=table, name=path.stem, path=path, profile=profile, profile_label=str(spec.get("label", profile)),
        title=str(spec.get("title", path.stem)), dataset=dataset,
        dataset_label=str(spec.get("dataset_label", dataset)), task=str(spec.get("task", "")),
        paper_backbone=str(spec.get("paper_backbone", "")), backbone=str(spec.get("backbone", "")),
        generator=str(spec.get("generator", "")), mapping=str(spec.get("mapping", "")),
        cells=_cells(spec.get("cells"), str(spec.get("split", "unobserved")), path),
        requires=[str(r) for r in spec.get("requires", [])],
        shared={k: spec[k] for k in ("device", "seed") if k in spec}, stages=stages, slurm=dict(spec.get("slurm", {})),
        scale=scale,
    )


def load_table(table: str, profile: str = "mini", params_root: Path | str = PARAMS_ROOT, scale: str = "") -> TableSpec:
    """Every experiment of ``table`` resolved for ``profile`` (at ``scale``, if given), with the table's own settings."""
    table = table_name(table)
    if profile not in PROFILES:
        raise ReproduceError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    root = Path(params_root)
    folder = root / table
    if not folder.is_dir():
        raise ReproduceError(f"no parameter folder {folder} for {table}; tables with one: {list_tables(root)}")
    defaults = _read_yaml(root / DEFAULTS_FILE)
    meta = _read_yaml(folder / TABLE_FILE) if (folder / TABLE_FILE).exists() else {}
    files = sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("_"))
    if not files:
        raise ReproduceError(f"{folder} holds no experiment files")
    experiments = [load_experiment(p, table, profile, defaults, scale) for p in files]
    label = experiments[0].profile_label
    comparisons = [tuple(pair) for pair in meta.get("comparisons", [])]
    if any(len(pair) != 2 for pair in comparisons):
        raise ReproduceError(f"{folder / TABLE_FILE}: each comparison is [baseline row, compared row]")
    return TableSpec(table, profile, label, experiments, dict(meta.get("not_reproduced", {}) or {}),
                     comparisons, list(meta.get("notes", []) or []), scale, [str(r) for r in meta.get("extra_rows", []) or []])
