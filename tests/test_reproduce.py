"""Table grids (hiralign.reproduce): parameter sets for Tables I-XI, the resumable grid runner, the
SLURM path through submitit's local executor, the paper profile's dataset check, replicates, and the
results (means with 95% intervals, gains paired over images and replicates and judged at 95%).

The grid mechanics run on six tiny stand-in notebooks (as in tests/test_pipeline.py) whose stage 05
writes a ``05_metrics.json`` in the layout of :mod:`hiralign.evaluate`, so they take seconds; the
statistics of collection are tested on hand-written ``05_metrics.json`` files; the real parameter
files are checked against the real notebooks' papermill parameters.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
import yaml
from scipy import stats

from hiralign import reproduce as rp
from hiralign.cli import main
from hiralign.executors import RunJob, RunOutcome
from hiralign.paper_numbers import agreement, improvement, load_paper_numbers, paper_direction
from hiralign.replicates import replicate_dirs, replicate_seed
from hiralign.stages import STAGES
from grid_helpers import experiment, make_standin_grid

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
    assert [paper_direction(g) for g in (0.5, -0.1, 0.0)] == ["better", "worse", "tie"]
    assert agreement("better", "better") == agreement("worse", "worse") == "agrees at 95%"
    assert agreement("worse", "better") == agreement("better", "worse") == "contradicts at 95%"
    assert agreement("not distinguishable", "better") == "not distinguishable"
    assert agreement("better", "tie") == "paper tie"


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
            extra = {cell for cell in filled if cell[0] in spec.extra_rows}
            assert filled - extra <= set(paper[table].values), f"{table}: cells outside the paper's table"
            assert not {row for row, _ in extra} & set(paper[table].rows), f"{table}: an extra row the paper has"
            unexplained = [cell for cell in paper[table].values if cell not in filled and not spec.reason(*cell)]
            assert not unexplained, f"{table}: cells {unexplained} are neither run nor explained"
            for exp in spec.experiments:
                assert exp.task and exp.backbone and exp.generator and exp.dataset, exp.path
                assert exp.mapping, f"{exp.path}: state how the paper's method maps onto ours"
                for row, ours in spec.comparisons:
                    known = set(paper[table].rows) | set(spec.extra_rows)
                    assert row in known and ours in known, (table, row, ours)


def test_paper_profile_runs_the_faithful_backbones_and_the_mini_profile_names_its_stand_ins():
    from hiralign import restorers
    from hiralign.restorers.paper import FAITHFUL

    for table in ALL_TABLES:
        for paper, mini in zip(rp.load_table(table, "paper").experiments, rp.load_table(table, "mini").experiments):
            assert paper.backbone in FAITHFUL, f"{paper.path}: the paper profile runs {paper.backbone!r}, not a faithful backbone"
            assert restorers.backbone(paper.backbone).family == restorers.backbone(mini.backbone).family, paper.path
            assert mini.backbone not in FAITHFUL and restorers.backbone(mini.backbone), mini.path
            assert mini.backbone == "spectral-cnn" or mini.backbone.startswith("tiny-"), mini.path
            for exp in (paper, mini):  # each profile's mapping names the backbone it runs
                assert exp.mapping.startswith(f"{exp.paper_backbone} -> {exp.backbone}"), (exp.path, exp.profile, exp.mapping)
        tiny = rp.load_table(table, "paper", scale="tiny")
        assert all(e.stages["01_proxy"]["backbone_config"] == "tiny" for e in tiny.experiments), table


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


def test_tiny_scale_keeps_the_paper_profile_and_shrinks_only_sizes_steps_and_epochs():
    for table in ALL_TABLES:
        paper, tiny = rp.load_table(table, "paper"), rp.load_table(table, "paper", scale="tiny")
        assert tiny.run_profile == "paper-tiny" and "FIXTURE" in tiny.profile_label
        for full, small in zip(paper.experiments, tiny.experiments):
            assert small.shared["device"] == "cpu" and small.requires == full.requires
            assert (small.task, small.backbone, small.generator, small.cells) == (full.task, full.backbone, full.generator, full.cells)
            assert small.stages["00_data"]["image_size"] == 32 < full.stages["00_data"]["image_size"]
            assert small.stages["04_finetune"]["epochs"] < full.stages["04_finetune"]["epochs"]
            for stage, values in full.stages.items():  # every other parameter is the paper profile's
                shrunk = set(rp.scale_overlay(yaml.safe_load((PARAMS / rp.DEFAULTS_FILE).read_text()), "paper", "tiny",
                                              full.dataset).get("stages", {}).get(stage, {}))
                assert {k: v for k, v in values.items() if k not in shrunk} == \
                       {k: v for k, v in small.stages[stage].items() if k not in shrunk}, (full.path, stage)
            assert rp.run_directory("runs", small).parent.parent.name == "paper-tiny"
    with pytest.raises(rp.ReproduceError, match="no scale 'huge'"):
        rp.load_table("table6", "paper", scale="huge")
    with pytest.raises(rp.ReproduceError, match="belongs to the 'paper' profile"):
        rp.load_table("table6", "mini", scale="tiny")


def test_data_root_stands_for_data_in_required_paths(tmp_path):
    assert rp.required_path("data/cave", tmp_path) == tmp_path / "cave"
    assert rp.required_path("../shared/data", tmp_path) == rp.REPO_ROOT / "../shared/data"  # not under data/: the repository's
    spec = rp.load_table("table8", "paper", scale="tiny")
    with pytest.raises(rp.MissingDatasetError) as err:
        rp.check_datasets(spec, {}, tmp_path)
    assert str(tmp_path / "kaist") in str(err.value) and str(tmp_path / "models" / "stable-diffusion-2-1-unclip") in str(err.value)
    for path in spec.experiments[0].requires:
        rp.required_path(path, tmp_path).mkdir(parents=True)
    rp.check_datasets(spec, {}, tmp_path)
    run = rp.plan(spec, tmp_path / "runs", data_root=tmp_path)[0]
    assert run.config["stages"]["00_data"]["dataset"] == str(tmp_path / "kaist")
    assert run.config["stages"]["02_rgb_guides"]["model_path"] == str(tmp_path / "models" / "stable-diffusion-2-1-unclip")
    assert run.run_dir == tmp_path / "runs" / "paper-tiny" / "table8" / run.experiment.name


def test_every_table_expands_to_parameters_the_notebooks_declare():
    declared = rp.declared_parameters(rp.NOTEBOOKS_DIR)
    assert set(declared) == set(STAGES), f"notebooks {sorted(set(STAGES) - set(declared))} are missing"
    paper = load_paper_numbers()
    for table in ALL_TABLES:
        for profile in rp.PROFILES:
            spec = rp.load_table(table, profile)
            problems = [p for e in spec.experiments for p in rp.validate(e, declared, paper[table], spec.extra_rows)]
            assert not problems, "\n".join(problems)
            runs = rp.plan(spec, "runs/reproduce", replicates=2)
            for key in (lambda r: r.config["name"], lambda r: r.name, lambda r: r.run_dir):
                assert len({key(r) for r in runs}) == len(runs) == 2 * len(spec.experiments)
            for run in runs:
                for stage, params in run.config["stages"].items():
                    assert set(params) <= set(declared[stage]), (table, profile, stage)
                assert run.config["stages"]["01_proxy"].get("task") or "task" not in declared["01_proxy"]


def test_paper_profile_without_datasets_fails_at_once_naming_paths(tmp_path):
    runs_root = tmp_path / "runs"
    with pytest.raises(rp.MissingDatasetError) as err:
        rp.reproduce("table1", "paper", runs_root=runs_root, results_dir=tmp_path / "results", data_root=tmp_path / "data")
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


@pytest.fixture
def grid(tmp_path):
    """A table6 with three stand-in experiments that differ only in stage 04 (like the real one);
    the 'generated' run fails in stage 04 while the file ``stop`` exists."""
    stop = tmp_path / "stop"
    interrupt = f'if Path(run_dir).name == "generated" and Path({str(stop)!r}).exists():\n    raise RuntimeError("interrupted on purpose")\n'
    kw = dict(make_standin_grid(tmp_path, interrupt), log=lambda m: None)
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
    gains = {(c["baseline"], c["metric"]): c for c in payload["comparisons"] if c["group"] == "Denoising"}
    # every image gains exactly the difference of the epochs: a constant shift over 8 unobserved images
    assert gains[("Proxy only", "psnr")]["agreement"] == "agrees at 95%"  # 31 -> 33, paper 37.39 -> 38.08
    assert gains[("Proxy only", "psnr")]["our_gain"] == pytest.approx(2.0) and gains[("Proxy only", "psnr")]["images"] == 8
    assert gains[("Generated only", "psnr")]["agreement"] == "contradicts at 95%"  # 34 -> 33, paper 38.04 -> 38.08
    assert gains[("Generated only", "sam")]["our_gain"] == pytest.approx(-1.0)  # SAM 6 -> 7: worse
    assert rp.disagreements(payload) == [c for c in payload["comparisons"] if c["agreement"] == "contradicts at 95%"]
    md = (results / "table6.md").read_text()
    assert "mini (synthetic stand-in)" in md and "**contradicts at 95%**" in md and "DISAGREES" not in md
    assert "| Proxy only | T3SC -> spectral-cnn | 31.00 | 37.39" in md  # one replicate: the mean alone
    assert "Replicates: 1 per experiment" in md and "training randomness" in md


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
        rp.reproduce("table6", "paper", runs_root=tmp / "runs", data_root=tmp / "data", **kw)
    (tmp / "data" / "cave").mkdir(parents=True)
    (tmp / "data" / "icvl").mkdir()
    spec = rp.load_table("table6", "paper", kw["params_root"])
    rp.check_datasets(spec, {}, tmp / "data")  # present now: no error
    runs = rp.plan(spec, tmp / "runs", kw["params_root"], kw["notebooks_dir"], data_root=tmp / "data")
    # required paths reach the notebooks as absolute paths (they run in notebooks/)
    assert runs[0].config["stages"]["00_data"]["dataset"] == str(tmp / "data" / "cave")


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


# ----------------------------------------------------------------------------- replicates and statistics


def test_replicates_run_in_rep_folders_with_seeds_shared_across_experiments(grid):
    kw, tmp, _ = grid
    spec = rp.load_table("table6", "mini", kw["params_root"])
    single = rp.plan(spec, tmp / "runs", kw["params_root"], kw["notebooks_dir"])
    # N = 1: today's layout, one run per experiment in its own folder, named after the experiment
    assert [(r.name, r.run_dir, r.replicate) for r in single] == [
        (e.name, rp.run_directory(tmp / "runs", e), 0) for e in spec.experiments]
    assert single[0].run_dir == (tmp / "runs" / "mini" / "table6" / "generated").resolve()
    runs = rp.plan(spec, tmp / "runs", kw["params_root"], kw["notebooks_dir"], replicates=3)
    assert [r.name for r in runs[:3]] == ["generated/rep0", "generated/rep1", "generated/rep2"]
    assert [r.run_dir for r in runs[:3]] == replicate_dirs(single[0].run_dir, 3)
    assert runs[1].run_dir == single[0].run_dir / "rep1" and runs[1].config["run_dir"] == str(runs[1].run_dir)
    for run in runs:
        stages = run.config["stages"]
        assert "seed" not in stages.get("00_data", {})  # every replicate scores the same images
        assert {stages[s]["seed"] for s in list(STAGES)[1:]} == {replicate_seed(0, run.replicate)}
    assert replicate_seed(0, 0) == 0 and len({replicate_seed(0, k) for k in range(3)}) == 3
    # replicate k of every experiment shares its seeds (and so its first stages): one leader per replicate
    jobs = [RunJob(r.name, r.run_dir / "params.yaml", r.run_dir, kw["notebooks_dir"]) for r in runs]
    leaders, followers = rp.leaders_first(jobs, {r.name: r.config for r in runs})
    assert [j.name for j in leaders] == ["generated/rep0", "generated/rep1", "generated/rep2"]
    assert len(followers) == 6
    with pytest.raises(rp.ReproduceError, match="at least 1"):
        rp.plan(spec, tmp / "runs", kw["params_root"], kw["notebooks_dir"], replicates=0)


IMAGES = [f"u{i}" for i in range(8)]


def fake_metrics(run_dir: Path, adapted: np.ndarray) -> None:
    """The ``05_metrics.json`` of a run whose ``adapted`` method scored ``adapted`` (8 unobserved
    images x PSNR, SSIM, SAM): its per-image rows and their summary means."""
    per_image = [["adapted", "unobserved", name, *map(float, scores)] for name, scores in zip(IMAGES, adapted)]
    summary = [["adapted", "", "unobserved", len(IMAGES), *map(float, adapted.mean(axis=0))]]
    payload = {"provenance": {"device": "cpu", "created": "2024-01-01T00:00:00+00:00"},
               "tables": {"per_image": {"columns": ["method", "split", "image", "psnr", "ssim", "sam"], "rows": per_image},
                          "summary": {"columns": ["method", "training", "split", "n", "psnr", "ssim", "sam"], "rows": summary}}}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / rp.RESULT_FILE).write_text(json.dumps(payload))


@pytest.fixture
def faked(grid):
    """table6 of the stand-in grid with hand-written results: ``write(scores)`` puts each experiment's
    per-replicate scores (``{experiment: [(images, 3) array per replicate]}``) into its run folders and
    returns the collected cells and comparisons."""
    kw, tmp, _ = grid
    spec = rp.load_table("table6", "mini", kw["params_root"])
    paper = load_paper_numbers(kw["params_root"] / "paper_numbers.yaml")["table6"]
    runs_root = tmp / "runs"

    def write(scores: dict[str, list[np.ndarray]], outcomes: dict | None = None):
        n = len(scores["proxy"])
        for exp in spec.experiments:
            for run_dir, adapted in zip(replicate_dirs(rp.run_directory(runs_root, exp), n), scores[exp.name]):
                fake_metrics(run_dir, adapted)
        cells = rp.collect(spec, paper, outcomes or {}, runs_root, n)
        return cells, rp.compare(spec, paper, cells)

    return spec, paper, runs_root, write


def baseline_scores(replicates: int, seed: int = 0) -> list[np.ndarray]:
    """Scores that differ between images and replicates: PSNR ~ 30, SSIM ~ 0.9, SAM ~ 8."""
    rng = np.random.default_rng(seed)
    return [rng.normal([30.0, 0.9, 8.0], [1.0, 0.02, 0.5], (len(IMAGES), 3)) for _ in range(replicates)]


def cell_of(cells, row: str, metric: str) -> rp.CellResult:
    return next(c for c in cells if (c.group, c.row, c.metric) == ("Denoising", row, metric))


def gain_of(comparisons, baseline: str, metric: str) -> rp.Comparison:
    return next(c for c in comparisons if (c.group, c.baseline, c.metric) == ("Denoising", baseline, metric))


def test_cells_are_means_over_replicates_with_t_intervals(faked):
    *_, write = faked
    base = baseline_scores(3)
    cells, _ = write({"proxy": base, "generated": base, "mixed": [b + 1.0 for b in base]})
    for row, offset in (("Proxy only", 0.0), ("Proxy + Generated", 1.0)):
        for j, metric in enumerate(("psnr", "ssim", "sam")):
            means = [b[:, j].mean() + offset for b in base]
            low, high = stats.t.interval(0.95, len(means) - 1, loc=np.mean(means), scale=stats.sem(means))
            cell = cell_of(cells, row, metric)
            assert cell.status == "measured" and cell.replicates == 3
            assert cell.ours == pytest.approx(np.mean(means))
            assert (cell.ci_low, cell.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_a_failed_or_missing_replicate_makes_the_cell_missing_naming_it(faked):
    spec, paper, runs_root, write = faked
    base = baseline_scores(3)
    failed = {"mixed/rep1": RunOutcome("mixed/rep1", runs_root, ok=False, seconds=0.0, error="RuntimeError: boom")}
    cells, comparisons = write({"proxy": base, "generated": base, "mixed": base}, failed)
    mixed = cell_of(cells, "Proxy + Generated", "psnr")
    assert mixed.ours is None and mixed.replicates == 0
    assert mixed.status == "missing: replicate rep1 of 3: run failed (RuntimeError: boom)"
    assert all(c.our_verdict == c.agreement == "not measured" and c.our_gain is None for c in comparisons)
    proxy = next(e for e in spec.experiments if e.name == "proxy")
    (rp.run_directory(runs_root, proxy) / "rep2" / rp.RESULT_FILE).unlink()
    cells = rp.collect(spec, paper, {}, runs_root, 3)
    assert cell_of(cells, "Proxy only", "sam").status == "missing: replicate rep2 of 3: not run"
    assert cell_of(cells, "Proxy + Generated", "sam").status == "measured"


def test_a_constant_shift_between_rows_is_its_own_interval_and_better(faked):
    *_, write = faked
    base = baseline_scores(3)
    shift = np.array([0.5, 0.01, -0.2])  # PSNR, SSIM up; SAM down: better in every metric
    mixed = [b + shift for b in base]
    _, comparisons = write({"proxy": base, "mixed": mixed, "generated": [m + shift for m in mixed]})
    for j, metric in enumerate(("psnr", "ssim", "sam")):
        gain = gain_of(comparisons, "Proxy only", metric)  # Proxy only -> Proxy + Generated: the paper's way
        assert gain.images == 8 and gain.replicates == 3
        for value in (gain.our_gain, gain.gain_low, gain.gain_high, gain.replicate_low, gain.replicate_high):
            assert value == pytest.approx(abs(shift[j]))  # an improvement, for SAM too
        assert gain.p_value < 0.05 and gain.our_verdict == "better" and gain.agreement == "agrees at 95%"
        # Generated only scores better still: the paper's gain of the mixture over it is contradicted
        against = gain_of(comparisons, "Generated only", metric)
        assert against.our_gain == pytest.approx(-abs(shift[j])) and against.our_verdict == "worse"
        assert against.agreement == "contradicts at 95%"


def test_identical_rows_are_not_distinguishable(faked):
    *_, write = faked
    base = baseline_scores(3)
    _, comparisons = write({"proxy": baseline_scores(3, seed=1), "generated": base, "mixed": base})
    for metric in ("psnr", "ssim", "sam"):
        gain = gain_of(comparisons, "Generated only", metric)
        assert gain.our_gain == 0.0 and gain.p_value == 1.0
        assert gain.our_verdict == gain.agreement == "not distinguishable"
    for gain in comparisons:  # Proxy only is other noise: a verdict only where every interval supports it
        if gain.our_verdict in ("better", "worse"):
            intervals = [(gain.gain_low, gain.gain_high), (gain.replicate_low, gain.replicate_high)]
            assert gain.p_value < 0.05 and len({lo > 0 for lo, hi in intervals} | {hi > 0 for lo, hi in intervals}) == 1


def test_results_show_intervals_replicates_and_contradictions(faked, tmp_path):
    spec, paper, _, write = faked
    base = baseline_scores(3)
    mixed = [b + [0.5, 0.01, -0.2] for b in base]
    cells, comparisons = write({"proxy": base, "mixed": mixed, "generated": [m + [0.5, 0.01, -0.2] for m in mixed]})
    paths = rp.write_results(spec, paper, cells, comparisons, {}, tmp_path, replicates=3)
    md = paths["md"].read_text()
    psnr = cell_of(cells, "Proxy only", "psnr")
    assert f"| Proxy only | T3SC -> spectral-cnn | {psnr.ours:.2f} ± {(psnr.ci_high - psnr.ci_low) / 2:.2f} | 37.39" in md
    assert "Replicates: 3 per experiment" in md and "95% CI over replicates" in md
    assert "| Denoising | Proxy only -> Proxy + Generated | PSNR | +0.69 | +0.50 [+0.50, +0.50] | [+0.50, +0.50] |" in md
    assert "| better | agrees at 95% |" in md and "| worse | **contradicts at 95%** |" in md
    assert "DISAGREES" not in md and "| agrees |" not in md
    rows = {(r["row"], r["group"], r["metric"]): r for r in read_csv(paths["csv"])}
    cell = rows[("Proxy only", "Denoising", "psnr")]
    assert float(cell["ci_low"]) == pytest.approx(psnr.ci_low) and cell["replicates"] == "3"
    gains = read_csv(paths["gains"])
    assert tuple(gains[0]) == rp.GAIN_COLUMNS and {g["agreement"] for g in gains} >= {"agrees at 95%", "contradicts at 95%"}
    results = rp.read_results(tmp_path, "table6")
    assert results["replicates"] == 3
    against = rp.disagreements(results)
    assert {(c["baseline"], c["metric"]) for c in against} == {("Generated only", m) for m in ("psnr", "ssim", "sam")}
    import matplotlib.pyplot as plt

    rp.plot_gains(results, "sam")
    rp.plot_rows(results, "psnr")
    plt.close("all")


def test_one_replicate_keeps_todays_folders_and_says_what_is_not_covered(faked, tmp_path):
    spec, paper, runs_root, write = faked
    base = baseline_scores(1)
    cells, comparisons = write({"proxy": base, "generated": base, "mixed": [b + [0.5, 0.01, -0.2] for b in base]})
    assert (runs_root / "mini" / "table6" / "proxy" / rp.RESULT_FILE).exists()
    assert not list(runs_root.rglob("rep*"))
    cell = cell_of(cells, "Proxy only", "psnr")
    assert cell.replicates == 1 and cell.ci_low is None and cell.ours == pytest.approx(base[0][:, 0].mean())
    gain = gain_of(comparisons, "Proxy only", "psnr")
    assert gain.replicates == 1 and gain.replicate_low is None and gain.agreement == "agrees at 95%"
    md = rp.render_markdown(spec, paper, cells, comparisons, {})
    assert "±" not in md and "Replicates: 1 per experiment" in md and "training randomness" in md
    assert "not covered" in md


def test_a_row_the_paper_lacks_is_filled_compared_without_a_paper_gain_and_its_fidelity_reported(grid, tmp_path):
    kw, tmp, _ = grid
    table = kw["params_root"] / "table6"
    meta = yaml.safe_load((table / rp.TABLE_FILE).read_text())
    (table / "ubf.yaml").write_text(yaml.safe_dump(experiment("Proxy + UBF", 2)))
    spec = rp.load_table("table6", "mini", kw["params_root"])
    paper = load_paper_numbers(kw["params_root"] / "paper_numbers.yaml")["table6"]
    declared = rp.declared_parameters(kw["notebooks_dir"])
    ubf = next(e for e in spec.experiments if e.name == "ubf")
    assert any("not in the paper's table6" in p and "extra_rows" in p for p in rp.validate(ubf, declared, paper, spec.extra_rows))
    meta.update(extra_rows=["Proxy + UBF"], comparisons=meta["comparisons"] + [["Proxy + UBF", "Proxy + Generated"]])
    (table / rp.TABLE_FILE).write_text(yaml.safe_dump(meta))
    spec = rp.load_table("table6", "mini", kw["params_root"])
    assert not rp.validate(ubf, declared, paper, spec.extra_rows)
    runs_root, base = tmp / "runs", baseline_scores(3)
    for exp in spec.experiments:
        shift = {"ubf": -0.5, "mixed": 0.5}.get(exp.name, 0.0)
        for k, run_dir in enumerate(replicate_dirs(rp.run_directory(runs_root, exp), 3)):
            fake_metrics(run_dir, base[k] + [shift, shift / 50, -shift / 2])
            if exp.name in ("ubf", "mixed"):
                payload = json.loads((run_dir / rp.RESULT_FILE).read_text())
                payload["tables"]["stage2_quality"] = {"columns": ["generator", "spr", "srec"],
                                                       "rows": [[exp.name, 0.5 + 0.1 * k, 0.25]]}
                (run_dir / rp.RESULT_FILE).write_text(json.dumps(payload))
    cells = rp.collect(spec, paper, {}, runs_root, 3)
    ubf_psnr = cell_of(cells, "Proxy + UBF", "psnr")
    assert ubf_psnr.paper is None and ubf_psnr.status == "measured" and ubf_psnr.ours == pytest.approx(np.mean([b[:, 0].mean() - 0.5 for b in base]))
    comparisons = rp.compare(spec, paper, cells)
    gain = gain_of(comparisons, "Proxy + UBF", "psnr")
    assert gain.paper_gain is None and gain.our_gain == pytest.approx(1.0) and gain.our_verdict == "better"
    assert gain.agreement == gain.paper_direction == "not in the paper"
    assert gain_of(comparisons, "Proxy only", "psnr").agreement == "agrees at 95%"  # the paper's pairs unchanged
    fidelity = rp.fidelity(spec, runs_root, 3)
    spr = next(f for f in fidelity if f.experiment == "ubf" and f.metric == "spr")
    assert spr.ours == pytest.approx(0.6) and spr.replicates == 3 and spr.ci_low < 0.6 < spr.ci_high
    assert {f.experiment for f in fidelity} == {"ubf", "mixed"}  # runs without a synthesized branch are left out
    paths = rp.write_results(spec, paper, cells, comparisons, {}, tmp_path, 3, fidelity)
    md = paths["md"].read_text()
    assert f"| Proxy + UBF | T3SC -> spectral-cnn | {ubf_psnr.ours:.2f} ± " in md and "| — |" in md
    assert "| Denoising | Proxy + UBF -> Proxy + Generated | PSNR | — | +1.00" in md and "| not in the paper |" in md
    assert "## Spectral fidelity of the synthesized HSIs" in md and "| ubf | Proxy + UBF @ Denoising | ubf | 0.600 ± " in md
    results = rp.read_results(tmp_path, "table6")
    assert len(results["fidelity"]) == 4
    import matplotlib.pyplot as plt

    rp.plot_rows(results, "psnr")
    rp.plot_gains(results, "psnr")
    plt.close("all")


def test_cli_dry_run_prints_every_replicate(grid, capsys):
    kw, tmp, _ = grid
    args = ["reproduce", "table6", "--dry-run", "--params-root", str(kw["params_root"]), "--notebooks",
            str(kw["notebooks_dir"]), "--runs-root", str(tmp / "runs")]
    assert main(args + ["--replicates", "2"]) == 0
    out = capsys.readouterr().out
    assert "# table6/proxy/rep1 [mini (synthetic stand-in)]" in out and str(tmp / "runs" / "mini" / "table6" / "proxy" / "rep1") in out
    assert main(args + ["--replicates", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_replicated_grid_shares_stages_per_replicate_and_reports_intervals(grid):
    kw, tmp, _ = grid
    runs, results = tmp / "runs", tmp / "results"
    run = rp.reproduce("table6", "mini", runs_root=runs, results_dir=results, replicates=2, **kw)
    assert run.ok, [o.error for o in run.outcomes]
    outcome = {o.name: o for o in run.outcomes}
    assert sorted(outcome) == [f"{e}/rep{k}" for e in ("generated", "mixed", "proxy") for k in (0, 1)]
    assert outcome["generated/rep0"].ran == list(STAGES)  # the leader of replicate 0 computes everything
    assert outcome["generated/rep1"].cached == ["00_data"]  # the data are the same in every replicate
    assert outcome["generated/rep1"].ran == list(STAGES)[1:]  # its own seeds from stage 01 on
    for name in ("mixed/rep0", "mixed/rep1", "proxy/rep0", "proxy/rep1"):
        assert outcome[name].cached == list(STAGES)[:4] and outcome[name].ran == list(STAGES)[4:]
    assert (runs / "mini" / "table6" / "proxy" / "rep1" / rp.RESULT_FILE).exists()
    payload = rp.read_results(results, "table6")
    cell = next(c for c in payload["cells"] if (c["row"], c["group"], c["metric"]) == ("Proxy only", "Denoising", "psnr"))
    jitter = 0.01 * (replicate_seed(0, 1) % 5)  # replicate 1's shift in the stand-in's stage 05
    assert cell["replicates"] == 2 and cell["ours"] == pytest.approx(31.0 + jitter / 2)
    assert cell["ci_low"] <= cell["ours"] <= cell["ci_high"]
    gain = next(c for c in payload["comparisons"] if (c["group"], c["baseline"], c["metric"]) == ("Denoising", "Proxy only", "psnr"))
    assert gain["replicates"] == 2 and gain["our_gain"] == pytest.approx(2.0) and gain["agreement"] == "agrees at 95%"
    assert "Replicates: 2 per experiment" in (results / "table6.md").read_text()


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
    assert "contradicts at 95%" in text and "mini (synthetic stand-in)" in text
    assert (tmp / "results" / "table6_psnr.png").exists()


def test_the_package_keeps_the_names_notebooks_and_tools_use():
    for name in ("read_results", "plot_rows", "plot_gains", "disagreements", "reproduce", "load_table", "plan",
                 "collect", "compare", "measured", "write_results", "table_name", "list_tables", "check_datasets"):
        assert callable(getattr(rp, name)), name
    assert rp.REPO_ROOT == REPO and rp.PARAMS_ROOT == PARAMS and issubclass(rp.MissingDatasetError, rp.ReproduceError)
