"""The paper's numbers for Tables I-XI, read from ``params/paper/paper_numbers.yaml``.

Each table is a grid of *rows* (the paper's method labels) by *groups* (its column blocks: a
dataset, a task, or dataset/backbone), every cell holding PSNR (dB), SSIM and SAM (degrees) as
printed in Section IV. Wherever these values reach an output they are labelled ``paper``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hiralign.errors import UserError
from hiralign.metrics import HIGHER_IS_BETTER
from hiralign.statistics import BETTER, WORSE

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_NUMBERS = REPO_ROOT / "params" / "paper" / "paper_numbers.yaml"
METRICS = ("psnr", "ssim", "sam")
#: :func:`agreement` of our verdict at 95% with the paper's direction.
AGREES, CONTRADICTS, NOT_DISTINGUISHABLE, PAPER_TIE = ("agrees at 95%", "contradicts at 95%", "not distinguishable",
                                                       "paper tie")


class PaperNumbersError(UserError, ValueError):
    """The paper-numbers file is malformed, or a table / row / group it lacks was asked for."""


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper: ``values[(row, group)] = (psnr, ssim, sam)``."""

    name: str
    title: str
    groups: tuple[str, ...]
    rows: tuple[str, ...]
    values: dict[tuple[str, str], tuple[float, float, float]]
    notes: tuple[str, ...] = field(default=())

    def value(self, row: str, group: str, metric: str) -> float:
        """The paper's ``metric`` for ``row`` in column block ``group``."""
        if (row, group) not in self.values:
            raise PaperNumbersError(f"{self.name}: no paper value for row {row!r} in group {group!r}; "
                                    f"rows {list(self.rows)}, groups {list(self.groups)}")
        if metric not in METRICS:
            raise PaperNumbersError(f"unknown metric {metric!r}; known: {METRICS}")
        return self.values[(row, group)][METRICS.index(metric)]


def _parse_table(name: str, raw: dict) -> PaperTable:
    try:
        groups = tuple(raw["groups"])
        metrics = tuple(raw.get("metrics", METRICS))
        rows = raw["rows"]
    except (KeyError, TypeError) as err:
        raise PaperNumbersError(f"{name}: needs 'groups' and 'rows' ({err})") from None
    if metrics != METRICS:
        raise PaperNumbersError(f"{name}: metrics must be {list(METRICS)} in that order; got {list(metrics)}")
    values: dict[tuple[str, str], tuple[float, float, float]] = {}
    labels = []
    for entry in rows:
        label = str(entry.get("row", ""))
        if not label or label in labels:
            raise PaperNumbersError(f"{name}: row label {label!r} is empty or repeated")
        extra = sorted(set(entry) - {"row"} - set(groups))
        if extra:
            raise PaperNumbersError(f"{name}, row {label!r}: unknown group(s) {extra}; groups are {list(groups)}")
        for group in groups:
            triple = entry.get(group)
            if triple is None:
                continue
            if len(triple) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in triple):
                raise PaperNumbersError(f"{name}, row {label!r}, group {group!r}: expected [PSNR, SSIM, SAM]; got {triple}")
            values[(label, group)] = tuple(float(v) for v in triple)
        labels.append(label)
    return PaperTable(name, str(raw.get("title", name)), groups, tuple(labels), values, tuple(raw.get("notes") or ()))


def load_paper_numbers(path: Path | str = PAPER_NUMBERS) -> dict[str, PaperTable]:
    """Every table of the paper-numbers file, by name (``table1`` ... ``table11``)."""
    path = Path(path)
    if not path.exists():
        raise PaperNumbersError(f"paper-numbers file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    return {name: _parse_table(name, table) for name, table in raw.items()}


def improvement(before: float, after: float, metric: str) -> float:
    """``after`` minus ``before`` signed so that a positive number is an improvement (SAM: a decrease)."""
    delta = float(after) - float(before)
    return delta if HIGHER_IS_BETTER[metric] else -delta


def paper_direction(paper_gain: float) -> str:
    """The direction of a gain the paper prints (an :func:`improvement`): ``better``, ``worse`` or ``tie``."""
    return "tie" if paper_gain == 0 else BETTER if paper_gain > 0 else WORSE


def agreement(our_verdict: str, direction: str) -> str:
    """Our verdict at 95% (:func:`hiralign.statistics.verdict`) against the paper's ``direction``:
    ``agrees at 95%`` when they are the same, ``contradicts at 95%`` when ours is distinguishable and
    the opposite, ``not distinguishable`` otherwise, ``paper tie`` when the paper reports no change."""
    if direction == "tie":
        return PAPER_TIE
    if our_verdict == direction:
        return AGREES
    return CONTRADICTS if our_verdict in (BETTER, WORSE) else NOT_DISTINGUISHABLE
