"""A stand-in table grid for the grid tests (tests/test_reproduce.py, tests/test_slurm_cluster.py):
a table6 of three experiments that differ only in stage 04, run on the six stand-in notebooks of
:func:`stage_helpers.make_standin_notebooks` (seconds per run), in its own parameter root."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from hiralign import reproduce as rp
from stage_helpers import make_standin_notebooks

PARAMS = Path(__file__).resolve().parents[1] / "params" / "paper"
#: The three experiments of the stand-in table6, by file name.
EXPERIMENTS = ("proxy", "generated", "mixed")


#: Stage 05 of the stand-ins writes 05_metrics.json in the layout of hiralign.evaluate.write_metrics,
#: its adapted scores offset by the `epochs` of stage 04 (the knob the three experiments turn), the
#: images spread around the means, and every score of a replicate (a derived seed) shifted a little.
STANDIN_METRICS = """\
import json
from hiralign.store import read_params
v = int(read_params(Path(run_dir, "04_finetune.h5"))["epochs"])
jitter = 0.01 * (int(seed) % 5)  # seed 0 (a single run, replicate 0) adds nothing
per_image = []
for split, n in (("observed", 4), ("unobserved", 8)):
    for i in range(n):
        spread = 0.1 * (i - (n - 1) / 2)  # mean zero over a split
        per_image.append(["source-only", split, f"{split}{i}", 30.0 + spread + jitter, 0.90, 10.0])
        per_image.append(["adapted", split, f"{split}{i}", 30.0 + v + spread + jitter, 0.90 + 0.01 * v, 10.0 - v])
rows = []
for split in ("observed", "unobserved", "total"):
    rows.append(["source-only", "", split, 2, 30.0 + jitter, 0.90, 10.0])
    rows.append(["adapted", "", split, 2, 30.0 + v + jitter, 0.90 + 0.01 * v, 10.0 - v])
payload = {"provenance": {"device": device, "created": "2024-01-01T00:00:00+00:00",
                          "code_version": {"hiralign": "0.1.0", "git_commit": "abcdef0123456789"}},
           "tables": {"summary": {"columns": ["method", "training", "split", "n", "psnr", "ssim", "sam"], "rows": rows},
                      "per_image": {"columns": ["method", "split", "image", "psnr", "ssim", "sam"], "rows": per_image}}}
Path(run_dir, "05_metrics.json").write_text(json.dumps(payload))
"""


def experiment(row: str, value: int) -> dict:
    finetune = {"epochs": value}
    return {"title": row, "dataset": "CAVE", "task": "denoise-gaussian", "paper_backbone": "T3SC", "backbone": "spectral-cnn",
            "generator": "jitter", "mapping": "T3SC -> spectral-cnn (stand-in)",
            "cells": [{"row": row, "group": "Denoising", "measure": "adapted"}],
            "stages": {"04_finetune": finetune}, "profiles": {"mini": {}, "paper": {}}}


def make_standin_grid(tmp_path: Path, finetune_code: str = "pass") -> dict:
    """The stand-in grid under ``tmp_path`` (``params``, ``notebooks``); ``finetune_code`` runs in
    stage 04 of every run before its record (``run_dir`` is the run's folder). Returns the keyword
    arguments of :func:`hiralign.reproduce.reproduce` that select it."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    make_standin_notebooks(notebooks, extra={"04_finetune": finetune_code, "05_evaluate": STANDIN_METRICS})
    root = tmp_path / "params"
    (root / "table6").mkdir(parents=True)
    shutil.copy(PARAMS / "paper_numbers.yaml", root / "paper_numbers.yaml")
    defaults = {
        "profiles": {
            "mini": {"label": "mini (synthetic stand-in)", "device": "cpu", "seed": 0, "stages": {"00_data": {"n_source_test": 3}},
                     "slurm": {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 10}},
            "paper": {"label": "paper", "device": "cuda", "seed": 0},
        },
        "datasets": {"CAVE": {"mini": {"dataset_label": "synthetic stand-in for CAVE"},
                              "paper": {"dataset_label": "data/cave", "requires": ["data/cave", "data/icvl"],
                                        "stages": {"00_data": {"dataset": "data/cave"}}}}},
        "origins": {"data/cave": {"name": "CAVE", "get": "https://www.cs.columbia.edu/CAVE/databases/multispectral/"}},
    }
    (root / rp.DEFAULTS_FILE).write_text(yaml.safe_dump(defaults))
    (root / "table6" / rp.TABLE_FILE).write_text(yaml.safe_dump({
        "comparisons": [["Proxy only", "Proxy + Generated"], ["Generated only", "Proxy + Generated"]],
        "not_reproduced": {}}))
    for name, exp in {"proxy": experiment("Proxy only", 1), "generated": experiment("Generated only", 4),
                      "mixed": experiment("Proxy + Generated", 3)}.items():
        (root / "table6" / f"{name}.yaml").write_text(yaml.safe_dump(exp))
    return dict(params_root=root, notebooks_dir=notebooks)
