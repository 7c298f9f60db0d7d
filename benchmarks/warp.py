"""Benchmark of the warp-based hyperspectral generation (stage 2b) on a CAVE-like 31-band scene.

For every image size and retrieval index, one fresh subprocess runs ``spectral_warp`` end to end and
reports the seconds spent in descriptors, retrieval, optimisation and transfer, the peak resident
memory of that process (``getrusage`` maxrss), recall@k of the index against exact search on a
sampled query subset, and the quality of the result. The scene is the real CAVE balloons scene:
centre-cropped for sizes below 256, as is at 256, bilinearly upsampled (2x for 512) above. The guide
is ``demo_guide`` of its proxy RGB (flip + circular shift up to 8 px + colour jitter + 0.5 px blur).

    python benchmarks/warp.py --sizes 128 256 512 --indexes flat ivf --modes paper coherent --device cpu --out results/

``--batched`` measures instead the G guides of one proxy (``--guides``, default 3, ``demo_guide``
seeds 0..G-1) warped one at a time and batched (``spectral_warps``: one optimisation, one index per
proxy), on 1 and 2 threads, as pairs per second (median of ``--repeats`` after a warm-up). With
``--code PATH`` the package is imported from another checkout (an older commit, to compare; where
it has no ``spectral_warps`` only the one-at-a-time rows run):

    python benchmarks/warp.py --batched --sizes 64 --out results/
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

#: The real scene the figures of results/warp_bench.md were measured on (CAVE balloons, 256 x 256 x 31,
#: MATLAB v5, variable ``Omsi``); give another with --scene or HIRALIGN_BENCH_SCENE.
DEFAULT_SCENE = os.environ.get("HIRALIGN_BENCH_SCENE") or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cave_balloons_ms_256.mat")

COLUMNS = [
    ("size", "size"), ("index", "index"), ("mode", "mode"), ("descriptors", "descriptors s"), ("retrieval", "retrieval s"),
    ("optimisation", "optimisation s"), ("transfer", "transfer s"), ("total", "total s"),
    ("seconds_per_iteration", "s / iter"), ("peak_rss_mb", "peak RSS MB"), ("recall", "recall@16"),
    ("recall_ties", "recall@16 (ties)"), ("rgb_psnr", "RGB PSNR vs guide"), ("hsi_psnr", "HSI PSNR vs moved proxy"),
    ("nnz_per_row", "nnz / row"),
]


def machine_description() -> dict:
    """CPU model, core count, load and library versions of the machine running the benchmark."""
    import faiss
    import numpy
    import scipy
    import torch

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_cores": os.cpu_count(),
        "cpu_flags": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "cuda_gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
    }


def scene_cube(size: int, path: Path | str):
    """The benchmark scene, centre-cropped (size <= its side) or bilinearly upsampled (larger sizes)."""
    import numpy as np
    from scipy import ndimage

    from hiralign.data.loaders import load_cave

    cube = load_cave(path)
    if size <= cube.height:
        top, left = (cube.height - size) // 2, (cube.width - size) // 2
        return cube.crop(top, left, size, size)
    zoom = (1, size / cube.height, size / cube.width)
    return cube.replace(np.clip(ndimage.zoom(cube.data, zoom, order=1), 0.0, 1.0), meta={"upsampled_to": size})


def run_one(size: int, index: str, mode: str, device: str, iters: int, threads: int, recall_queries: int, seed: int, scene: str) -> dict:
    """One configuration in this process (called in a fresh subprocess, so maxrss is its own)."""
    import numpy as np

    from hiralign.spectral import to_rgb
    from hiralign.warp import demo_guide, spectral_warp

    cube = scene_cube(size, scene)
    proxy_rgb = to_rgb(cube)
    guide = demo_guide(proxy_rgb, seed=seed, flip=True, max_shift=8, jitter=0.1, blur_sigma=0.5)
    result = spectral_warp(
        cube, proxy_rgb, guide, index=index, mode=mode, device=device, iters=iters, threads=threads,
        recall_queries=recall_queries if index != "flat" else 0, seed=seed,
    )
    # Reference for the spectra: the proxy HSI under the guide's geometric part (flip + shift, no colour jitter).
    shift = np.random.default_rng(seed).integers(-8, 9, size=2)
    moved = np.roll(cube.data[:, :, ::-1], shift=tuple(int(s) for s in shift), axis=(1, 2))

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))

    row = {"size": size, "index": result.diagnostics["index"], "requested_index": index, "mode": mode, "bands": cube.bands, "iters": iters}
    row.update({k: round(v, 3) for k, v in result.timings.items()})
    row["recall"] = result.diagnostics.get("recall", 1.0 if result.diagnostics["index"] == "flat" else None)
    row["recall_ties"] = result.diagnostics.get("recall_ties", row["recall"])
    row["recall_check_s"] = result.diagnostics.get("recall_check_s")
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["rgb_psnr"] = round(psnr(result.rgb / max(float(guide.max()), 1e-12), guide / max(float(guide.max()), 1e-12)), 2)
    row["hsi_psnr"] = round(psnr(result.hsi, moved), 2)
    row["nnz_per_row"] = round(result.operator.nnz / (size * size), 1)
    row["scene"] = "CAVE balloons (real), " + ("centre crop" if size < 256 else "as is" if size == 256 else f"bilinear upsample to {size}")
    return row


def run_batched(size: int, variant: str, threads: int, guides: int, repeats: int, seed: int, scene: str) -> dict:
    """Seconds for ``guides`` guides of one proxy, one at a time or batched (median of ``repeats``, after a warm-up)."""
    import statistics

    import numpy as np

    import hiralign
    from hiralign.spectral import to_rgb
    from hiralign.warp import demo_guide, spectral_warp

    cube = scene_cube(size, scene)
    hsi, rgb = cube.data, to_rgb(cube)
    pairs = [(hsi, rgb, demo_guide(rgb, seed=seed + g)) for g in range(guides)]
    if variant == "batched":
        from hiralign.warp import spectral_warps

        def warp(iters):
            return list(spectral_warps(pairs, threads=threads, iters=iters, seed=seed))
    else:
        def warp(iters):
            return [spectral_warp(*pair, threads=threads, iters=iters, seed=seed) for pair in pairs]
    warp(5)  # warm-up: imports, thread pools, allocator
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        results = warp(200)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"size": size, "variant": variant, "threads": threads, "guides": guides, "seconds": round(median, 2),
            "runs_s": [round(x, 2) for x in seconds], "pairs_per_s": round(guides / median, 3),
            "hsi_mean": float(np.mean([r.hsi.mean() for r in results])), "code": str(Path(hiralign.__file__).parents[1])}


def batched_table(rows: list[dict]) -> str:
    lines = ["| size | code | variant | threads | seconds (median) | runs | pairs / s | vs first row |", "|---|---|---|---|---|---|---|---|"]
    base = rows[0]["pairs_per_s"] if rows else 1.0
    for r in rows:
        lines.append(f"| {r['size']} | {r.get('label', r['code'])} | {r['variant']} | {r['threads']} | {r['seconds']} | "
                     f"{', '.join(map(str, r['runs_s']))} | {r['pairs_per_s']} | {r['pairs_per_s'] / base:.2f}x |")
    return "\n".join(lines)


#: One-at-a-time variations around the defaults for the numbers the paper's text lost (plus iters).
ABLATION = [
    ("defaults", {}),
    ("patch=5", {"patch": 5}), ("patch=7", {"patch": 7}),
    ("radius=0", {"radius": 0}), ("radius=2", {"radius": 2}),
    ("stencil=1", {"stencil": 1}), ("stencil=5", {"stencil": 5}),
    ("iters=0", {"iters": 0}), ("iters=50", {"iters": 50}),
    ("lambda_patch=0", {"lambda_patch": 0.0}), ("lambda_mi=0", {"lambda_mi": 0.0}),
    ("lambda_ssim=0", {"lambda_ssim": 0.0}), ("lambda_grad=0", {"lambda_grad": 0.0}),
    ("lambda_tv=0", {"lambda_tv": 0.0}), ("lambda_tv=1", {"lambda_tv": 1.0}),
    ("lambda_prior=0", {"lambda_prior": 0.0}), ("lambda_prior=0.1", {"lambda_prior": 0.1}),
    ("RGB L1 only", {"lambda_patch": 0.0, "lambda_mi": 0.0, "lambda_ssim": 0.0, "lambda_grad": 0.0, "lambda_tv": 0.0, "lambda_prior": 0.0}),
    ("init_sharpness=2", {"init_sharpness": 2.0}), ("init_sharpness=32", {"init_sharpness": 32.0}),
]


def ablation_cases(size: int, seed: int, scene: str) -> dict:
    """Guides with a known answer on a CAVE crop: (proxy HSI, proxy RGB, guide, reference HSI)."""
    import numpy as np

    from hiralign.spectral import to_rgb
    from hiralign.warp import demo_guide

    hsi = scene_cube(size, scene).data
    rgb = to_rgb(hsi, np.arange(400.0, 701.0, 10.0))
    shift = np.random.default_rng(seed).integers(-6, 7, size=2)
    moved = np.roll(hsi[:, :, ::-1], shift=tuple(int(v) for v in shift), axis=(1, 2))
    return {
        "flip": (hsi, rgb, np.ascontiguousarray(rgb[:, :, ::-1]), np.ascontiguousarray(hsi[:, :, ::-1])),
        "shift 7": (hsi, rgb, np.roll(rgb, 7, axis=2), np.roll(hsi, 7, axis=2)),
        "demo guide": (hsi, rgb, demo_guide(rgb, seed), moved),  # flip + shift + colour jitter + blur
    }


def run_ablation(size: int, seed: int, threads: int, scene: str) -> list[dict]:
    """HSI PSNR against the known answer, RGB PSNR against the guide, and seconds, per variation and case."""
    import numpy as np

    from hiralign.warp import spectral_warp

    def psnr(a, b) -> float:
        return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2)))

    rows = []
    for name, change in ABLATION:
        row = {"variation": name}
        for case, (hsi, rgb, guide, reference) in ablation_cases(size, seed, scene).items():
            result = spectral_warp(hsi, rgb, guide, seed=seed, threads=threads, **change)
            scale = float(guide.max())
            row[f"{case}: HSI PSNR"] = round(psnr(reference, result.hsi), 2)
            row[f"{case}: RGB PSNR"] = round(psnr(guide / scale, result.rgb / scale), 2)
            row[f"{case}: s"] = round(result.timings["total"], 2)
        rows.append(row)
        print(name, {k: v for k, v in row.items() if "HSI" in k}, flush=True)
    return rows


def ablation_table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    def fmt(v) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) and abs(v) < 1 else (f"{v:.1f}" if isinstance(v, float) else str(v))

    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fmt(r.get(key)) for key, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def machine_markdown(machine: dict) -> str:
    return (
        f"Machine: {machine['cpu_model']}, {machine['cpu_cores']} cores ({machine['cpu_flags']}), "
        f"{machine['platform']}; Python {machine['python']}, torch {machine['torch']}, faiss {machine['faiss']}, "
        f"numpy {machine['numpy']}, scipy {machine['scipy']}; GPU: {machine['cuda_gpu'] or 'none'}. "
        f"Load average at start {tuple(round(x, 2) for x in machine['load_average'])} (shared machine)."
    )


def write_report(out: Path, section: str, content: dict) -> str:
    """Merge one section (``benchmark`` or ``ablation``) into warp_bench.json and rewrite warp_bench.md."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "warp_bench.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report[section] = content
    path.write_text(json.dumps(report, indent=2))
    parts = []
    if "benchmark" in report:
        b = report["benchmark"]
        parts += [f"## Warp benchmark ({b['created'][:10]}, {b['args']['iters']} iterations, device {b['args']['device']}, "
                  f"{b['args']['threads']} thread(s))", markdown_table(b["rows"]), *[f"- {n}" for n in b["notes"]], machine_markdown(b["machine"])]
    if "batched" in report:
        c = report["batched"]
        parts += [f"## Batched warps ({c['created'][:10]}, {c['guides']} guides of one proxy, 200 iterations, coherent mode, CPU)",
                  "The proxy is the CAVE balloons centre crop, the guides `demo_guide(proxy RGB, seed=0..G-1)`; "
                  "'one at a time' = a `spectral_warp` call per guide, 'batched' = one `spectral_warps` call "
                  "(one optimisation, one index per proxy). Each row is a fresh process; seconds are the median of the runs listed.",
                  batched_table(c["rows"]), *[f"- {n}" for n in c["notes"]], machine_markdown(c["machine"])]
    if "ablation" in report:
        a = report["ablation"]
        parts += [f"## Lost-number ablation ({a['created'][:10]}, CAVE balloons centre crop {a['size']}x{a['size']}x31, one change at a time)",
                  "HSI PSNR against the known answer (for the demo guide: the proxy HSI under the guide's flip + shift, "
                  "ignoring its colour jitter), RGB PSNR of W x proxy RGB against the guide, seconds end to end.",
                  ablation_table(a["rows"]), machine_markdown(a["machine"])]
    text = "\n\n".join(parts) + "\n"
    (out / "warp_bench.md").write_text(text)
    return text


def batched_rows(args) -> tuple[list[dict], list[str]]:
    """The --batched rows: for each checkout (the other ones first, then this one) and thread count, each variant."""
    checkouts = [tuple(c.split("=", 1)) for c in args.code] + [("this checkout", None)]
    rows, notes = [], []
    for label, path in checkouts:
        for size in args.sizes:
            for threads in (1, 2):
                for variant in ("one at a time", "batched"):
                    env = dict(os.environ)
                    if path:
                        env["PYTHONPATH"] = os.pathsep.join([path, env.get("PYTHONPATH", "")])
                    cmd = [sys.executable, __file__, "--batch-worker", str(size), variant, str(threads), "--guides", str(args.guides),
                           "--repeats", str(args.repeats), "--seed", str(args.seed), "--scene", args.scene]
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                    if proc.returncode or not lines:
                        if "spectral_warps" in proc.stderr:
                            notes.append(f"{label}: no spectral_warps (batched warps), one-at-a-time rows only")
                            continue
                        raise RuntimeError(f"{label} {size} {variant} {threads}: failed\n{proc.stderr[-2000:]}")
                    row = json.loads(lines[-1][len("RESULT "):])
                    row["label"] = label
                    rows.append(row)
                    print(f"{label} {size}px {variant} {threads} thread(s): {row['seconds']} s, {row['pairs_per_s']} pairs/s", flush=True)
    return rows, sorted(set(notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="square image sizes (pixels)")
    parser.add_argument("--indexes", nargs="+", default=["flat", "ivf"], choices=["flat", "ivf", "hnsw", "auto"], help="retrieval indexes")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--iters", type=int, default=200, help="Adam iterations (paper: 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch / faiss CPU threads (1: robust on a shared machine)")
    parser.add_argument("--recall-queries", type=int, default=2000, help="queries sampled for recall@16 vs exact")
    parser.add_argument("--exact-max-size", type=int, default=256, help="skip the exact 'flat' index above this size (noted in the table)")
    parser.add_argument("--ablation", action="store_true", help="run the lost-number ablation instead of the timing benchmark")
    parser.add_argument("--ablation-size", type=int, default=96, help="crop size of the ablation scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scene", default=DEFAULT_SCENE, help="CAVE-format .mat scene (default: HIRALIGN_BENCH_SCENE or the shared balloons scene)")
    parser.add_argument("--out", default="results/", help="folder for warp_bench.json and warp_bench.md")
    parser.add_argument("--modes", nargs="+", default=["paper"], choices=["paper", "coherent"], help="warp modes (WarpParams.mode)")
    parser.add_argument("--worker", nargs=3, metavar=("SIZE", "INDEX", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--batched", action="store_true", help="one proxy's guides one at a time vs batched (pairs / s) instead of the timing benchmark")
    parser.add_argument("--guides", type=int, default=3, help="--batched: guides of the proxy")
    parser.add_argument("--repeats", type=int, default=3, help="--batched: timed runs per row (median reported)")
    parser.add_argument("--code", nargs="+", default=[], metavar="LABEL=PATH",
                        help="--batched: also time the package of these checkouts (e.g. base=/tmp/old-commit)")
    parser.add_argument("--batch-worker", nargs=3, metavar=("SIZE", "VARIANT", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not Path(args.scene).is_file():
        parser.error(f"benchmark scene {args.scene} not found; pass --scene PATH (a CAVE .mat file, variable Omsi)")

    if args.worker:
        row = run_one(int(args.worker[0]), args.worker[1], args.worker[2], args.device, args.iters, args.threads, args.recall_queries, args.seed, args.scene)
        print("RESULT " + json.dumps(row))
        return 0
    if args.batch_worker:
        size, variant, threads = args.batch_worker
        print("RESULT " + json.dumps(run_batched(int(size), variant, int(threads), args.guides, args.repeats, args.seed, args.scene)))
        return 0
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = machine_description()
    if args.batched:
        rows, notes = batched_rows(args)
        print(write_report(Path(args.out), "batched", {"created": created, "guides": args.guides, "machine": machine, "rows": rows, "notes": notes}))
        return 0
    if args.ablation:
        rows = run_ablation(args.ablation_size, args.seed, args.threads, args.scene)
        print(write_report(Path(args.out), "ablation", {"created": created, "size": args.ablation_size, "machine": machine, "rows": rows}))
        return 0

    rows, notes = [], []
    failed = 0
    for size in args.sizes:
        for index in args.indexes:
            if index == "flat" and size > args.exact_max_size:
                notes.append(f"exact 'flat' index skipped at {size}x{size} (--exact-max-size {args.exact_max_size}): "
                             f"brute-force kNN of {size * size} x {size * size} descriptors")
                continue
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--worker", str(size), index, mode, "--device", args.device, "--iters", str(args.iters),
                       "--threads", str(args.threads), "--recall-queries", str(args.recall_queries), "--seed", str(args.seed),
                       "--scene", args.scene]
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not lines:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    notes.append(f"{size}x{size} {index} {mode}: failed (exit {proc.returncode})")
                    failed += 1
                    continue
                row = json.loads(lines[-1][len("RESULT "):])
                row["wall_s"] = round(time.perf_counter() - start, 1)
                rows.append(row)
                print(f"{size}x{size} {index} {mode}: total {row['total']:.1f} s (recall {row['recall']})", flush=True)
    machine["load_average_end"] = os.getloadavg()
    content = {"created": created, "args": {k: v for k, v in vars(args).items() if k != "worker"}, "machine": machine, "rows": rows, "notes": notes}
    print(write_report(Path(args.out), "benchmark", content))
    return 1 if failed else 0  # a failed configuration is reported in the table and fails the run


if __name__ == "__main__":
    sys.exit(main())
