"""Stage-by-stage cost of the whole pipeline (``hiralign bench pipeline``): how it grows with image
size and image count, on one and two threads.

Every configuration is ``params/demo.yaml`` (the embedded SYNTHETIC benchmark, non-i.i.d. Gaussian
denoising, 3 ``recompose`` guides per proxy, 200 warp iterations) with its image size, its observed
and unobserved target image counts and every stage's ``threads`` changed. Each stage runs as its
own ``hiralign run --until STAGE`` (the earlier stages are then current, so only that stage runs) in
a fresh run folder: its wall time is the pipeline's own record (``pipeline.json``), its peak memory
the largest resident set among the processes of that command (the controller and the notebook's
kernel; ``wait4`` rusage). The growth exponent of a stage is the least-squares slope of
log(seconds) against log(pixels per image) at a fixed count, and against log(images) at a fixed size.

    python benchmarks/pipeline.py --sizes 64 128 256 --images 8 16 32 --threads 1 2 --out results/

The grid is the sizes at the smallest count plus the counts at the smallest size (the corner is
shared), for each thread count; ``--device cuda`` runs every stage on the GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from warp import machine_description, machine_markdown  # noqa: E402  (the warp benchmark's machine record)

REPO = Path(__file__).resolve().parents[1]
HIRALIGN = Path(sys.executable).with_name("hiralign")
STAGES = ("00_data", "01_proxy", "02_rgb_guides", "03_warp", "04_finetune", "05_evaluate")


def configuration(size: int, images: int, threads: int, device: str, run_dir: Path) -> dict:
    """``params/demo.yaml`` at ``size`` px with ``images`` observed and ``images`` unobserved target images."""
    config = yaml.safe_load((REPO / "params" / "demo.yaml").read_text())
    config.update(name=f"bench-{size}px-{images}img-{threads}t", run_dir=str(run_dir), device=device)
    stages = config["stages"]
    stages["00_data"].update(image_size=size, n_target_observed=images, n_target_unobserved=images)
    for name in ("02_rgb_guides", "03_warp", "04_finetune", "05_evaluate"):
        stages.setdefault(name, {})["threads"] = threads
    return config


def run_stage(config_path: Path, stage: str) -> tuple[int, float, str]:
    """``hiralign run CONFIG --until STAGE``: (exit status, peak RSS MB of its processes, output tail)."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([str(HIRALIGN), "run", str(config_path), "--until", stage], stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        log.seek(0)
        tail = log.read()[-3000:]
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, tail


def measure(size: int, images: int, threads: int, device: str, work: Path) -> list[dict]:
    """One configuration, stage by stage: rows of (stage, seconds, peak RSS MB)."""
    run_dir = work / f"{size}-{images}-{threads}"
    config_path = work / f"{size}-{images}-{threads}.yaml"
    config_path.write_text(yaml.safe_dump(configuration(size, images, threads, device, run_dir), sort_keys=False))
    rows = []
    for stage in STAGES:
        code, peak_mb, tail = run_stage(config_path, stage)
        if code:
            raise RuntimeError(f"{config_path.name} {stage} failed (exit {code}):\n{tail}")
        record = json.loads((run_dir / "pipeline.json").read_text())[stage]
        if record.get("did") != "ran":
            raise RuntimeError(f"{config_path.name} {stage}: expected it to run, the pipeline says {record}")
        rows.append({"size": size, "images": images, "threads": threads, "stage": stage,
                     "seconds": round(record["seconds"], 2), "peak_rss_mb": round(peak_mb, 1)})
        print(f"{size} px, {images} images, {threads} thread(s): {stage} {record['seconds']:.1f} s, {peak_mb:.0f} MB", flush=True)
    return rows


def growth_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (None for fewer than two distinct points)."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y > 0]
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def exponents(rows: list[dict], sizes: list[int], counts: list[int], threads: int) -> dict[str, tuple]:
    """Per stage (and the total): (exponent in pixels at the smallest count, exponent in images at the smallest size)."""
    def seconds(size, images, stage):
        found = [r["seconds"] for r in rows if (r["size"], r["images"], r["threads"]) == (size, images, threads)
                 and (stage == "total" or r["stage"] == stage)]
        return sum(found) if found else None

    out = {}
    for stage in (*STAGES, "total"):
        by_size = [(s * s, seconds(s, counts[0], stage)) for s in sizes]
        by_count = [(n, seconds(sizes[0], n, stage)) for n in counts]
        by_size = [(x, y) for x, y in by_size if y is not None]
        by_count = [(x, y) for x, y in by_count if y is not None]
        out[stage] = (growth_exponent(*zip(*by_size)) if by_size else None, growth_exponent(*zip(*by_count)) if by_count else None)
    return out


def markdown(report: dict) -> str:
    rows, sizes, counts = report["rows"], report["args"]["sizes"], report["args"]["images"]
    configs = sorted({(r["threads"], r["size"], r["images"]) for r in rows})
    head = "| stage | " + " | ".join(f"{s} px, {n} img, {t} thr" for t, s, n in configs) + " |"
    lines = [head, "|" + "---|" * (len(configs) + 1)]
    for stage in (*STAGES, "total"):
        cells = []
        for t, s, n in configs:
            found = [r for r in rows if (r["threads"], r["size"], r["images"]) == (t, s, n) and (stage == "total" or r["stage"] == stage)]
            if stage == "total":
                cells.append(f"**{sum(r['seconds'] for r in found):.1f} s**, {max(r['peak_rss_mb'] for r in found):.0f} MB")
            else:
                cells.append(f"{found[0]['seconds']:.1f} s, {found[0]['peak_rss_mb']:.0f} MB" if found else "-")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    parts = [f"## Pipeline benchmark ({report['created'][:10]}, device {report['args']['device']}; seconds and peak RSS per stage)",
             "\n".join(lines)]
    exp_lines = ["| stage | " + " | ".join(f"{t} thr: x pixels | {t} thr: x images" for t in report["args"]["threads"]) + " |",
                 "|" + "---|" * (1 + 2 * len(report["args"]["threads"]))]
    fitted = {t: exponents(rows, sizes, counts, t) for t in report["args"]["threads"]}

    def fmt(v):
        return "-" if v is None else f"{v:.2f}"
    for stage in (*STAGES, "total"):
        exp_lines.append(f"| {stage} | " + " | ".join(f"{fmt(fitted[t][stage][0])} | {fmt(fitted[t][stage][1])}" for t in report["args"]["threads"]) + " |")
    parts += [f"Growth exponents: seconds ~ pixels^a at {counts[0]} images ({', '.join(f'{s}x{s}' for s in sizes)}) and "
              f"~ images^b at {sizes[0]}x{sizes[0]} ({', '.join(map(str, counts))} observed + as many unobserved target images); "
              "least-squares slopes in log-log.", "\n".join(exp_lines), machine_markdown(report["machine"]),
              f"Wall time of the benchmark: {report['wall_s'] / 60:.1f} min. One run per cell (no replicates): "
              "timings on a shared machine move by up to 2x between runs."]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="image sizes (px), at the smallest count")
    parser.add_argument("--images", type=int, nargs="+", default=[8, 16, 32], help="observed (and as many unobserved) target images, at the smallest size")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="threads of every stage (0: the libraries' default)")
    parser.add_argument("--device", default="cpu", help="device of every stage: cpu, cuda, auto")
    parser.add_argument("--work", default=None, help="folder for the run folders (default: a temporary one, removed)")
    parser.add_argument("--out", default="results/", help="folder for pipeline_bench.json and pipeline_bench.md")
    args = parser.parse_args(argv)
    sizes, counts = sorted(set(args.sizes)), sorted(set(args.images))
    args.sizes, args.images = sizes, counts
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = machine_description()
    start = time.perf_counter()
    grid = [(s, counts[0]) for s in sizes] + [(sizes[0], n) for n in counts[1:]]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for threads in args.threads:
            for size, images in grid:
                rows += measure(size, images, threads, args.device, Path(work))
    machine["load_average_end"] = os.getloadavg()
    report = {"created": created, "args": vars(args), "machine": machine, "rows": rows, "wall_s": round(time.perf_counter() - start, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline_bench.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (out / "pipeline_bench.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
