"""Evaluation (hiralign.evaluate) and result tables with provenance (hiralign.report)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from hiralign import evaluate as ev, finetune as ft, metrics, report
from hiralign.restorers.inference import restore
from hiralign.store import RunStore, file_digest
from hiralign.train import TrainConfig, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_finetune import make_run, smooth_cubes  # noqa: E402  (shared helpers)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- scoring on a constructed case


def constructed_case():
    """Clean cubes, two methods with known offsets, observed flags: every number is checkable."""
    rng = np.random.default_rng(4)
    clean = smooth_cubes(rng, 4)
    noise = rng.normal(0, 1, clean.shape).astype(np.float32)
    restored = {"source-only": clean + 0.05 * noise, "adapted": clean + 0.02 * noise}
    return clean, restored, ["a", "b", "c", "d"], np.array([True, False, True, False])


def test_per_image_scores_agree_with_hiralign_metrics():
    clean, restored, names, observed = constructed_case()
    rows = ev.score_images(restored, clean, names, observed)
    assert len(rows) == 2 * 4
    for row in rows:
        i = names.index(row["image"])
        cube = restored[row["method"]][i]
        assert row["split"] == ("observed" if observed[i] else "unobserved")
        assert row["psnr"] == metrics.psnr(cube, clean[i])
        assert row["ssim"] == metrics.ssim(cube, clean[i])
        assert row["sam"] == metrics.sam(cube, clean[i])
    # known answer: PSNR of x + s*n against x is about -20 log10(s) for unit-variance noise
    adapted = [r["psnr"] for r in rows if r["method"] == "adapted"]
    np.testing.assert_allclose(adapted, -20 * np.log10(0.02), atol=0.3)


def test_summary_rows_columns_and_means():
    clean, restored, names, observed = constructed_case()
    per_image = ev.score_images(restored, clean, names, observed)
    summary = ev.summarize(per_image, descriptions={"adapted": "HIR-ALIGN"})
    assert [(r["split"], r["method"]) for r in summary] == [
        (s, m) for s in ("observed", "unobserved", "total") for m in ("source-only", "adapted")]
    for row in summary:
        chosen = [r for r in per_image if r["method"] == row["method"] and row["split"] in ("total", r["split"])]
        assert row["n"] == (4 if row["split"] == "total" else 2)
        for m in ("psnr", "ssim", "sam"):
            assert row[m] == pytest.approx(np.mean([r[m] for r in chosen]), abs=1e-12)
        base = next(r for r in summary if r["split"] == row["split"] and r["method"] == "source-only")
        assert row["d_psnr"] == pytest.approx(row["psnr"] - base["psnr"])
    adapted_total = next(r for r in summary if r["split"] == "total" and r["method"] == "adapted")
    assert adapted_total["training"] == "HIR-ALIGN" and adapted_total["d_psnr"] > 7  # 0.02 vs 0.05 noise: ~8 dB
    # total pools images (not the mean of split means) -- equal split sizes make them agree here
    obs, unobs = (next(r for r in summary if r["split"] == s and r["method"] == "adapted") for s in ("observed", "unobserved"))
    assert adapted_total["psnr"] == pytest.approx((obs["psnr"] + unobs["psnr"]) / 2)


def test_summary_leaves_out_an_empty_split():
    clean, restored, names, _ = constructed_case()
    summary = ev.summarize(ev.score_images(restored, clean, names, [True] * 4))
    assert {r["split"] for r in summary} == {"observed", "total"}


def test_spectral_fidelity_known_answers():
    rng = np.random.default_rng(0)
    real = smooth_cubes(rng, 2, size=16)
    rows = ev.spectral_fidelity(real, {"same": real.copy(), "far": real + 5.0}, k=5, max_samples=None)
    same, far = rows
    assert (same["spr"], same["srec"]) == (1.0, 1.0)
    assert (far["spr"], far["srec"]) == (0.0, 0.0)
    assert same["n_spectra"] == same["n_real"] == 2 * 16 * 16
    pr = metrics.spectral_precision_recall(real + 0.01, real, k=5)
    assert ev.spectral_fidelity(real, {"x": real + 0.01}, k=5, max_samples=None)[0]["spr"] == pr.precision


# ----------------------------------------------------------------------------- a whole run directory


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    make_run(run_dir, n_obs=3, n_unobs=1, held_out=1)  # unobserved: one 01 image and one held-out 00 image
    inputs = ft.load_inputs(run_dir)
    config = TrainConfig(epochs=1, steps_per_epoch=4, batch_size=4, patch_size=16, seed=0)
    for method, comp in ft.finetune_runs("mixed", ["proxy"], upper_bound=True).items():
        pairs = ft.AlignedPairs(inputs.proxies, inputs.task, inputs.synthesized, inputs.clean_observed, comp)
        ft.finetune(inputs.source_checkpoint, pairs, config, out=ft.model_path(run_dir, method), progress=False)
    evaluation = ev.evaluate_run(run_dir, params={"tile": 128, "note": "test"}, seed=3)
    return run_dir, evaluation, ev.write_metrics(run_dir, evaluation)


def test_discover_models_finds_source_and_every_stage3_model(evaluated):
    run_dir, evaluation, _ = evaluated
    assert list(evaluation.models) == ["source-only", "adapted", "proxy-only", "upper-bound"]
    assert evaluation.models["adapted"] == run_dir / "04_model.safetensors"
    assert evaluation.models["upper-bound"] == run_dir / "04_model_upper-bound.safetensors"


def test_evaluation_tables_have_the_right_rows_and_columns(evaluated):
    _, evaluation, _ = evaluated
    summary = evaluation.table("summary")
    assert summary.columns == ["method", "training", "split", "n", "replicates", "psnr", "psnr_low", "psnr_high", "ssim",
                               "ssim_low", "ssim_high", "sam", "sam_low", "sam_high", "d_psnr", "d_ssim", "d_sam",
                               "interval"]
    methods = ["input", "source-only", "adapted", "proxy-only", "upper-bound"]
    assert [(r["split"], r["method"]) for r in summary.records()] == [
        (s, m) for s in ("observed", "unobserved", "total") for m in methods]
    assert [r["n"] for r in summary.records()] == [3] * 5 + [2] * 5 + [5] * 5
    training = {r["method"]: r["training"] for r in summary.records()}
    assert training["adapted"].startswith("HIR-ALIGN, ratio 3:1") and "upper bound" in training["upper-bound"]
    paired = evaluation.table("paired").records()  # the paper's two comparisons, per split and metric
    assert [(r["comparison"], r["split"], r["metric"]) for r in paired] == [
        (c, s, m) for c in ("adapted - source-only", "adapted - proxy-only") for s in ("observed", "unobserved", "total")
        for m in ("psnr", "ssim", "sam")]
    scores = {(r["method"], r["image"]): r["psnr"] for r in evaluation.table("per_image").records()}
    total = next(r for r in paired if r["comparison"] == "adapted - source-only" and r["split"] == "total" and r["metric"] == "psnr")
    names = {image for _, image in scores}
    assert total["difference"] == pytest.approx(np.mean([scores["adapted", i] - scores["source-only", i] for i in names]))
    assert total["n"] == 5 and total["replicates"] == 1 and total["over_replicates_low"] is None
    per_image = evaluation.table("per_image")
    assert len(per_image.rows) == 5 * 5 and per_image.columns == ["method", "split", "image", "psnr", "ssim", "sam"]
    fidelity = evaluation.table("spectral_fidelity").records()
    assert [r["set"] for r in fidelity] == ["synthesized (03_warp)", "proxy (observed)", "clean observed (reference)",
                                            "source domain (reference)"]
    assert fidelity[2]["spr"] == 1.0  # clean observed spectra are a subset of the real target spectra


def test_evaluation_numbers_agree_with_hiralign_metrics(evaluated):
    run_dir, evaluation, _ = evaluated
    targets = ft.target_images(ft.load_inputs(run_dir))
    model = load_checkpoint(run_dir / "04_model.safetensors").model
    for name in ("img1", "held0"):
        row = next(r for r in evaluation.table("per_image").records() if r["method"] == "adapted" and r["image"] == name)
        i = targets.names.index(name)
        restored = np.clip(restore(model, targets.degraded[i]), 0, 1)
        np.testing.assert_allclose(evaluation.restored["adapted"][i], restored, atol=1e-6)
        assert row["psnr"] == pytest.approx(metrics.psnr(restored, targets.clean[i]), abs=1e-6)
        assert row["sam"] == pytest.approx(metrics.sam(restored, targets.clean[i]), abs=1e-6)
        # the "input" row scores the observation itself
        inp = next(r for r in evaluation.table("per_image").records() if r["method"] == "input" and r["image"] == name)
        assert inp["psnr"] == pytest.approx(metrics.psnr(np.clip(targets.degraded[i], 0, 1), targets.clean[i]))
    assert evaluation.table("per_image").records()[-1]["split"] == "unobserved"  # the held-out image


def test_metrics_files_carry_provenance(evaluated):
    run_dir, evaluation, paths = evaluated
    assert {p.name for p in paths.values()} == {"05_metrics.json", "05_metrics.md", "05_metrics.csv",
                                                "05_metrics_per_image.csv", "05_metrics_spectral_fidelity.csv",
                                                "05_metrics_paired.csv"}
    payload = json.loads((run_dir / "05_metrics.json").read_text())
    prov = payload["provenance"]
    for key in ("params", "code_version", "dataset", "seed", "device", "wall_time_s", "created", "task", "models"):
        assert key in prov, key
    assert prov["params"] == {"tile": 128, "note": "test"} and prov["seed"] == 3 and prov["device"] == "cpu"
    assert prov["dataset"]["params"] == {"dataset": "test"} and prov["dataset"]["synthetic"] is True
    assert prov["images"] == {"observed": 3, "unobserved": 2, "held_out_from_00_data": 1}
    assert prov["code_version"]["hiralign"] and prov["wall_time_s"] > 0
    assert set(prov["models"]) == {"source-only", "adapted", "proxy-only", "upper-bound"}
    tables, prov2 = report.read_tables(run_dir / "05_metrics.json")
    assert tables["summary"].rows == evaluation.table("summary").rows and prov2 == prov
    lines = (run_dir / "05_metrics.csv").read_text().splitlines()
    assert lines[0] == "# table: summary" and any(line.startswith("# code_version:") for line in lines)
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert len(rows) == 15 and float(rows[2]["psnr"]) == pytest.approx(evaluation.table("summary").records()[2]["psnr"])
    md = (run_dir / "05_metrics.md").read_text()
    assert "| method | training | split | n | replicates | psnr [95% CI] |" in md and "provenance" in md
    assert "per_image: see `05_metrics_per_image.csv`" in md


def test_evaluation_without_clean_targets_fails_clearly(tmp_path):
    make_run(tmp_path)
    from hiralign.store import RunStore

    store = RunStore(tmp_path)
    art = store.read("01_proxy")
    data = {k: v for k, v in art.data.items() if k != "clean"}
    store.write("01_proxy", data, art.params)
    with pytest.raises(ValueError, match="no clean target HSIs"):
        ev.evaluate_run(tmp_path)


# ----------------------------------------------------------------------------- report helpers


def test_table_markdown_csv_and_validation():
    table = report.Table.from_records("t", [{"method": "a", "psnr": 30.123456, "ssim": 0.91234, "n": 3}], title="T")
    md = table.to_markdown()
    assert "### T" in md and "| a | 30.12 | 0.9123 | 3 |" in md
    assert table.to_csv(["x: 1"]).splitlines() == ["# x: 1", "method,psnr,ssim,n", "a,30.123456,0.91234,3"]
    with pytest.raises(ValueError, match="row 0 has 1 values"):
        report.Table("bad", ["a", "b"], [[1]])
    with pytest.raises(ValueError, match="unique"):
        report.write_tables(".", "x", [table, table], {})


def test_plot_helpers_draw(evaluated):
    _, evaluation, _ = evaluated
    wl = evaluation.wavelengths
    i = 0
    panels = {m: evaluation.restored[m][i] for m in ("input", "source-only", "adapted")}
    figs = [
        report.plot_training_curves({"adapted": {"epoch": [0, 1, 2], "loss": [np.nan, 0.2, 0.1], "psnr": [20, 21, 22]}}),
        report.plot_per_image_bars(evaluation.table("per_image").records()),
        report.show_crops({"clean": evaluation.clean[i], **panels}, wl, box=(4, 4, 16)),
        report.plot_spectra({"clean": evaluation.clean[i], **panels}, wl, [(3, 3), (20, 10)]),
        report.plot_error_maps(panels, evaluation.clean[i], box=(0, 0, 16)),
    ]
    assert all(len(f.axes) >= 1 for f in figs)
    np.testing.assert_allclose(report.error_map(panels["adapted"], evaluation.clean[i]).mean(),
                               np.abs(panels["adapted"] - evaluation.clean[i]).mean(), rtol=1e-6)
    plt.close("all")


@pytest.mark.slow
def test_notebook_05_writes_the_metrics_files(evaluated, tmp_path):
    import papermill

    run_dir, evaluation, _ = evaluated
    for p in run_dir.glob("05_metrics*"):
        p.unlink()
    models = {m: p for m, p in evaluation.models.items() if m != "source-only"}
    comps = {"adapted": "mixed", "proxy-only": "proxy", "upper-bound": "clean"}
    RunStore(run_dir).write(ft.STAGE, ft.curves_tree({m: [{"epoch": 0}] for m in models}, models, comps),
                            {"ratio": "3:1", "seed": 0}, files={p.name: file_digest(p) for p in models.values()})
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "05_evaluate.ipynb"
    papermill.execute_notebook(str(notebook), str(tmp_path / "05.ipynb"),
                               parameters={"run_dir": str(run_dir), "crop": 16, "pixels": "2,3; 20,21", "seed": 3, "threads": 1},
                               cwd=str(notebook.parent), progress_bar=False, kernel_name="python3")
    tables, prov = report.read_tables(run_dir / "05_metrics.json")
    assert tables["summary"].rows == evaluation.table("summary").rows  # same numbers as the library call
    assert prov["params"]["tile"] == 128 and (run_dir / "05_metrics.md").exists()
    reloaded = ev.load(RunStore(run_dir))  # the record holds what the figures show
    assert [t.rows for t in reloaded.tables] == [t.rows for t in evaluation.tables]
    for method, restored in evaluation.restored.items():
        np.testing.assert_array_equal(reloaded.restored[method], restored)
