"""Table grids (hiralign.reproduce): parameter sets for Tables I-XI, the resumable grid runner, the
SLURM path through submitit's local executor, the paper profile's dataset check, and the results.

The grid mechanics run on six tiny stand-in notebooks (as in tests/test_pipeline.py) whose stage 05
writes a ``05_metrics.json`` in the layout of :mod:`hiralign.evaluate`, so they take seconds; the
real parameter files are checked against the real notebooks' papermill parameters.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from hiralign import reproduce as rp
from hiralign.cli import main
from hiralign.paper_numbers import direction_verdict, improvement, load_paper_numbers
from hiralign.stages import STAGES
from stage_helpers import make_standin_notebooks

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params" / "paper"
ALL_TABLES = [f"table{i}" for i in range(1, 12)]

# ----------------------------------------------------------------------------- the paper's numbers


def test_paper_numbers_transcribed_for_every_table():
    paper = load_paper_numbers()
    assert sorted(paper, key=lambda n: int(n[5:])) == ALL_TABLES
    # spot checks against the text of Section IV
    assert paper["table1"].value("SERT (Ours)", "CAVE", "psnr") == 40.57
    assert paper["table2"].value("RCTV", "KAIST", "sam") == 6.93
    assert paper["table3"].value("Bicubic", "CAVE", "ssim") == 0.932
    assert paper["table4"].value("Inpainting (Ours)", "KAIST/PromptIR", "psnr") == 37.42
    assert paper["table5"].value("SSUMamba (Ours)", "HSIDwrD", "sam") == 9.67
    assert paper["table7"].value("3:1", "Super-resolution", "psnr") == 35.63
    assert paper["table9"].value("SR MCNet (HSIGene)", "KAIST", "sam") == 4.14
    assert paper["table11"].value("Complex noise SERT (UB)", "CAVE", "psnr") == 40.99
    # the paper's tables agree with each other where they report the same setting
    assert paper["table8"].values[("UnCLIP (Ours)", "Inpainting")] == paper["table4"].values[("Inpainting (Ours)", "KAIST/PromptIR")]
    assert paper["table11"].values[("Complex noise SERT (Ours)", "CAVE")] == paper["table10"].values[("Unobserved Ours", "Denoising")]


def test_gain_direction_follows_each_metrics_sense():
    assert improvement(30.0, 31.0, "psnr") == 1.0
    assert improvement(10.0, 8.0, "sam") == 2.0  # a smaller angle is better
    assert direction_verdict(0.5, 0.1) == "agrees"
    assert direction_verdict(0.5, -0.1) == "DISAGREES"
    assert direction_verdict(0.5, 0.0) == "DISAGREES"
    assert direction_verdict(0.0, 1.0) == "paper tie"


def test_table_names():
    assert rp.table_name("table6") == rp.table_name("6") == rp.table_name("VI") == rp.table_name("table-vi") == "table6"
    with pytest.raises(rp.ReproduceError, match="unknown table"):
        rp.table_name("table99x")


# ----------------------------------------------------------------------------- the real parameter files


def test_every_table_of_section_iv_has_a_parameter_set_for_both_profiles():
    assert rp.list_tables() == ALL_TABLES
    paper = load_paper_numbers()
    for table in ALL_TABLES:
        for profile in rp.PROFILES:
            spec = rp.load_table(table, profile)
            assert spec.experiments, table
            filled = {(c.row, c.group) for e in spec.experiments for c in e.cells}
            assert filled <= set(paper[table].values), f"{table}: cells outside the paper's table"
            unexplained = [cell for cell in paper[table].values if cell not in filled and not spec.reason(*cell)]
            assert not unexplained, f"{table}: cells {unexplained} are neither run nor explained"
            for exp in spec.experiments:
                assert exp.task and exp.backbone and exp.generator and exp.dataset, exp.path
                assert exp.mapping, f"{exp.path}: state how the paper's method maps onto ours"
                for row, ours in spec.comparisons:
                    assert (row, ours) and row in paper[table].rows and ours in paper[table].rows


def test_mini_profile_is_cpu_sized_and_labelled_paper_profile_names_real_datasets():
    for table in ALL_TABLES:
        for exp in rp.load_table(table, "mini").experiments:
            assert "mini (synthetic stand-in)" in exp.profile_label
            assert exp.requires == [] and exp.shared["device"] == "cpu"
            assert exp.stages["00_data"]["dataset"] == "synthetic"
            assert exp.stages["00_data"]["image_size"] <= 32
            assert "synthetic stand-in" in exp.dataset_label
        for exp in rp.load_table(table, "paper").experiments:
            data = exp.stages["00_data"]
            assert any(data["dataset"] == r or data["dataset"].startswith(r + "/") for r in exp.requires), exp.path
            assert data["dataset"].startswith("data/") and exp.shared["device"] == "cuda"


def test_every_table_expands_to_parameters_the_notebooks_declare():
    declared = rp.declared_parameters(rp.NOTEBOOKS_DIR)
    assert set(declared) == set(STAGES), f"notebooks {sorted(set(STAGES) - set(declared))} are missing"
    paper = load_paper_numbers()
    for table in ALL_TABLES:
        for profile in rp.PROFILES:
            spec = rp.load_table(table, profile)
            problems = [p for e in spec.experiments for p in rp.validate(e, declared, paper[table])]
            assert not problems, "\n".join(problems)
            runs = rp.plan(spec, "runs/reproduce")
            names = [config["name"] for _, _, config in runs]
            assert len(set(names)) == len(names)
            for _, run_dir, config in runs:
                for stage, params in config["stages"].items():
                    assert set(params) <= set(declared[stage]), (table, profile, stage)
                assert config["stages"]["01_proxy"].get("task") or "task" not in declared["01_proxy"]


def test_paper_profile_without_datasets_fails_at_once_naming_paths(tmp_path):
    runs_root = tmp_path / "runs"
    with pytest.raises(rp.MissingDatasetError) as err:
        rp.reproduce("table1", "paper", runs_root=runs_root, results_dir=tmp_path / "results", data_root=tmp_path)
    message = str(err.value)
    for path in ("data/cave", "data/kaist", "data/icvl"):
        assert str(tmp_path / path) in message
    assert "docs/datasets.md" in message and "columbia.edu" in message
    assert not runs_root.exists() and not (tmp_path / "results").exists()  # nothing ran, nothing written


def test_cli_paper_profile_reports_missing_datasets(capsys):
    if (REPO / "data" / "cave").exists():
        pytest.skip("this checkout has data/cave")
    assert main(["reproduce", "table6", "--profile", "paper"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hiralign reproduce: ") and "data/cave" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- a stand-in grid


#: Stage 05 of the stand-ins writes 05_metrics.json in the layout of hiralign.evaluate.write_metrics,
#: its adapted scores offset by the `epochs` of stage 04 (the knob the three experiments turn).
STANDIN_METRICS = """\
import json
from hiralign.store import read_params
v = int(read_params(Path(run_dir, "04_finetune.h5"))["epochs"])
rows = []
for split in ("observed", "unobserved", "total"):
    rows.append(["source-only", "", split, 2, 30.0, 0.90, 10.0])
    rows.append(["adapted", "", split, 2, 30.0 + v, 0.90 + 0.01 * v, 10.0 - v])
payload = {"provenance": {"device": device, "created": "2024-01-01T00:00:00+00:00",
                          "code_version": {"hiralign": "0.1.0", "git_commit": "abcdef0123456789"}},
           "tables": {"summary": {"columns": ["method", "training", "split", "n", "psnr", "ssim", "sam"], "rows": rows}}}
Path(run_dir, "05_metrics.json").write_text(json.dumps(payload))
"""


def experiment(row: str, value: int) -> dict:
    finetune = {"epochs": value}
    return {"title": row, "dataset": "CAVE", "task": "denoise-gaussian", "paper_backbone": "T3SC", "backbone": "spectral-cnn",
            "generator": "jitter", "mapping": "T3SC -> spectral-cnn (stand-in)",
            "cells": [{"row": row, "group": "Denoising", "measure": "adapted"}],
            "stages": {"04_finetune": finetune}, "profiles": {"mini": {}, "paper": {}}}


@pytest.fixture
def grid(tmp_path):
    """A table6 with three stand-in experiments that differ only in stage 04 (like the real one)."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    stop = tmp_path / "stop"
    interrupt = f'if Path(run_dir).name == "generated" and Path({str(stop)!r}).exists():\n    raise RuntimeError("interrupted on purpose")\n'
    make_standin_notebooks(notebooks, extra={"04_finetune": interrupt, "05_evaluate": STANDIN_METRICS})
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
    kw = dict(params_root=root, notebooks_dir=notebooks, log=lambda m: None)
    return kw, tmp_path, stop


def read_csv(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


def stages_logged(run_dir: Path) -> list[str]:
    log = run_dir / "log.txt"
    return log.read_text().split() if log.exists() else []


@pytest.mark.slow
def test_interrupted_grid_resumes_only_missing_runs_and_writes_tables(grid):
    kw, tmp, stop = grid
    runs, results = tmp / "runs", tmp / "results"
    stop.write_text("")  # the 'generated' run stops in stage 04, as if interrupted there
    first = rp.reproduce("table6", "mini", runs_root=runs, results_dir=results, **kw)
    outcome = {o.name: o for o in first.outcomes}
    assert not first.ok and not outcome["generated"].ok and "interrupted on purpose" in outcome["generated"].error
    assert outcome["proxy"].ok and outcome["mixed"].ok
    # runs sharing stages 00-03: one computes them ('generated', the first by name), the others copy them
    assert outcome["generated"].ran[:4] == list(STAGES)[:4]
    assert outcome["proxy"].cached == list(STAGES)[:4] and outcome["proxy"].ran == list(STAGES)[4:]
    rows = {(r["row"], r["metric"]): r for r in read_csv(results / "table6.csv") if r["group"] == "Denoising"}
    assert rows[("Generated only", "psnr")]["status"].startswith("missing: run failed")
    assert float(rows[("Proxy only", "psnr")]["ours"]) == 31.0

    stop.unlink()
    for name in ("proxy", "generated", "mixed"):
        (runs / "mini" / "table6" / name / "log.txt").unlink(missing_ok=True)
    second = rp.reproduce("table6", "mini", runs_root=runs, results_dir=results, **kw)
    assert second.ok
    outcome = {o.name: o for o in second.outcomes}
    assert outcome["proxy"].ran == [] and outcome["mixed"].ran == []  # finished runs are not touched
    assert outcome["proxy"].skipped == list(STAGES)
    assert outcome["generated"].ran == ["04_finetune", "05_evaluate"]  # only what was missing
    assert stages_logged(runs / "mini" / "table6" / "generated") == ["04_finetune", "05_evaluate"]
    assert stages_logged(runs / "mini" / "table6" / "proxy") == []

    rows = {(r["row"], r["group"], r["metric"]): r for r in read_csv(results / "table6.csv")}
    cell = rows[("Generated only", "Denoising", "psnr")]
    assert cell["status"] == "measured" and float(cell["ours"]) == 34.0 and float(cell["paper"]) == 38.04
    assert cell["profile"] == "mini (synthetic stand-in)" and cell["dataset"] == "synthetic stand-in for CAVE"
    assert cell["device"] == "cpu" and "abcdef0123" in cell["code_version"] and cell["date"].startswith("2024-01-01")
    assert float(rows[("Proxy + Generated", "Denoising", "sam")]["ours"]) == 7.0
    sr = rows[("Proxy only", "Super-resolution", "psnr")]
    assert sr["ours"] == "" and sr["status"].startswith("not reproduced") and float(sr["paper"]) == 37.38

    payload = json.loads((results / "table6.json").read_text())
    verdicts = {(c["baseline"], c["metric"]): c["verdict"] for c in payload["comparisons"] if c["group"] == "Denoising"}
    assert verdicts[("Proxy only", "psnr")] == "agrees"  # 31 -> 33, paper 37.39 -> 38.08
    assert verdicts[("Generated only", "psnr")] == "DISAGREES"  # 34 -> 33, paper 38.04 -> 38.08
    md = (results / "table6.md").read_text()
    assert "mini (synthetic stand-in)" in md and "**DISAGREES**" in md and "| Proxy only | T3SC -> spectral-cnn | 31.00 | 37.39" in md


@pytest.mark.slow
def test_slurm_executor_through_submitit_local_cluster(grid):
    kw, tmp, _ = grid
    runs = tmp / "runs"
    run = rp.reproduce("table6", "mini", executor="slurm", jobs=2, runs_root=runs, results_dir=tmp / "results",
                       slurm={"cluster": "local", "folder": tmp / "submitit"}, **kw)
    assert run.ok, [o.error for o in run.outcomes]
    assert sorted(o.name for o in run.outcomes) == ["generated", "mixed", "proxy"]
    assert any((tmp / "submitit").glob("*_log.out"))  # submitit ran them as jobs and kept their logs
    rows = {(r["row"], r["group"], r["metric"]): r for r in read_csv(tmp / "results" / "table6.csv")}
    assert float(rows[("Proxy + Generated", "Denoising", "psnr")]["ours"]) == 33.0


def test_paper_profile_check_on_stand_in_grid(grid):
    kw, tmp, _ = grid
    with pytest.raises(rp.MissingDatasetError, match="data/icvl"):
        rp.reproduce("table6", "paper", runs_root=tmp / "runs", data_root=tmp, **kw)
    (tmp / "data" / "cave").mkdir(parents=True)
    (tmp / "data" / "icvl").mkdir()
    spec = rp.load_table("table6", "paper", kw["params_root"])
    rp.check_datasets(spec, {}, tmp)  # present now: no error
    runs = rp.plan(spec, tmp / "runs", kw["params_root"], kw["notebooks_dir"], data_root=tmp)
    # required paths reach the notebooks as absolute paths (they run in notebooks/)
    assert runs[0][2]["stages"]["00_data"]["dataset"] == str(tmp / "data" / "cave")


def test_unknown_parameter_is_reported_with_its_file(grid):
    kw, tmp, _ = grid
    bad = experiment("Proxy only", 1)
    bad["stages"]["03_warp"] = {"no_such_knob": 3}
    (kw["params_root"] / "table6" / "proxy.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(rp.ReproduceError, match=r"proxy.yaml \[mini\]: 03_warp has no parameter\(s\) \['no_such_knob'\]"):
        rp.reproduce("table6", "mini", runs_root=tmp / "runs", **kw)


def test_measured_reads_the_summary_means_not_per_image_rows():
    payload = {"tables": {
        "per_image": {"columns": ["method", "split", "image", "psnr", "ssim", "sam"],
                      "rows": [["adapted", "unobserved", "a", 1.0, 0.1, 1.0]]},
        "summary": {"columns": ["method", "training", "split", "n", "psnr", "ssim", "sam"],
                    "rows": [["adapted", "", "observed", 1, 2.0, 0.2, 2.0], ["adapted", "", "unobserved", 1, 3.0, 0.3, 3.0]]}}}
    assert rp.measured(payload, "adapted", "unobserved") == {"psnr": 3.0, "ssim": 0.3, "sam": 3.0}
    assert rp.measured(payload, "upper-bound", "unobserved") is None


# ----------------------------------------------------------------------------- notebook 06


@pytest.mark.slow
def test_tables_notebook_renders_a_results_table(grid, tmp_path):
    kw, tmp, stop = grid
    rp.reproduce("table6", "mini", runs_root=tmp / "runs", results_dir=tmp / "results", **kw)
    out = tmp_path / "06.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "06_tables.ipynb"), str(out), cwd=str(REPO / "notebooks"),
                               parameters={"table": "table6", "results_dir": str(tmp / "results"), "metric": "psnr"},
                               progress_bar=False, kernel_name="python3")
    text = "\n".join(str(o.get("text", o.get("data", {}).get("text/markdown", "")))
                     for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs)
    assert "DISAGREES" in text and "mini (synthetic stand-in)" in text
    assert (tmp / "results" / "table6_psnr.png").exists()


def test_the_package_keeps_the_names_notebooks_and_tools_use():
    for name in ("read_results", "plot_rows", "plot_gains", "disagreements", "reproduce", "load_table", "plan",
                 "collect", "compare", "measured", "write_results", "table_name", "list_tables", "check_datasets"):
        assert callable(getattr(rp, name)), name
    assert rp.REPO_ROOT == REPO and rp.PARAMS_ROOT == PARAMS and issubclass(rp.MissingDatasetError, rp.ReproduceError)
