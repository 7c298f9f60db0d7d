"""benchmarks/pipeline.py (``hiralign bench pipeline``): its configurations are valid pipelines, its
growth exponents are least-squares log-log slopes, its table holds every stage. The timings
themselves are the benchmark's business (results/pipeline_bench.md), never a test's."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import yaml

from hiralign.pipeline import load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pipeline_bench", REPO / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipeline_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_configuration_is_the_demo_at_the_asked_size_count_and_threads(bench, tmp_path):
    config = bench.configuration(128, 16, 2, "cpu", tmp_path / "run")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    resolved = validate_config(load_config(path), REPO / "notebooks")
    assert resolved["00_data"]["image_size"] == 128
    assert resolved["00_data"]["n_target_observed"] == resolved["00_data"]["n_target_unobserved"] == 16
    assert all(resolved[s]["threads"] == 2 for s in ("02_rgb_guides", "03_warp", "04_finetune", "05_evaluate"))
    demo = yaml.safe_load((REPO / "params" / "demo.yaml").read_text())
    assert resolved["02_rgb_guides"]["n_guides"] == demo["stages"]["02_rgb_guides"]["n_guides"]


def test_growth_exponent_is_the_log_log_slope(bench):
    assert bench.growth_exponent([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)
    noisy = bench.growth_exponent([64 ** 2, 128 ** 2, 256 ** 2], [1.0, 2.2, 3.9])
    xs, ys = [math.log(64 ** 2), math.log(128 ** 2), math.log(256 ** 2)], [math.log(1.0), math.log(2.2), math.log(3.9)]
    mx, my = sum(xs) / 3, sum(ys) / 3
    assert noisy == pytest.approx(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs))
    assert bench.growth_exponent([8], [5.0]) is None


def test_report_lists_every_stage_and_the_exponents(bench):
    rows = [{"size": s, "images": n, "threads": 1, "stage": stage, "seconds": (s / 64) ** 2 * n / 8 * (i + 1), "peak_rss_mb": 100.0}
            for s, n in ((64, 8), (128, 8), (64, 16)) for i, stage in enumerate(bench.STAGES)]
    report = {"created": "2026-12-02T00:00:00", "args": {"sizes": [64, 128], "images": [8, 16], "threads": [1], "device": "cpu"},
              "machine": {"cpu_model": "x", "cpu_cores": 2, "cpu_flags": "-", "platform": "p", "python": "3", "torch": "t",
                          "faiss": "f", "numpy": "n", "scipy": "s", "cuda_gpu": None, "load_average": (0, 0, 0)},
              "rows": rows, "wall_s": 60.0}
    text = bench.markdown(report)
    for stage in (*bench.STAGES, "total"):
        assert f"| {stage} |" in text
    exponents = bench.exponents(rows, [64, 128], [8, 16], 1)
    assert exponents["03_warp"] == (pytest.approx(1.0), pytest.approx(1.0))  # seconds ~ pixels * images here
    assert "| 03_warp | 1.00 | 1.00 |" in text
