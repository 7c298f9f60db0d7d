"""Benchmark of the restoration backbones: parameter count (ours vs the count the paper / official code
reports) and CPU forward time on a 31-band 64 x 64 image, for the faithful re-implementations of the
paper's backbones and for the registry's CPU-sized stand-ins.

Denoisers take a 1 x 31 x 64 x 64 input; x4 super-resolution networks a 1 x 31 x 16 x 16 input (a
64 x 64 output). The time is the median of ``--repeats`` forward passes in eval mode without gradients,
after one warm-up pass, with 1 and 2 torch threads (SSUMamba, whose pure-torch selective scan takes
minutes per pass on a CPU: one pass with 2 threads).

    python benchmarks/backbones.py --out results/          # or: hiralign bench backbones
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

#: The faithful backbones (registered by hiralign.restorers.paper): paper and how released weights were checked.
FAITHFUL = {
    "qrnn3d": ("QRNN3D (Wei et al., TNNLS 2021)", "yes: keys equal HSIR's; same outputs (tests/test_qrnn3d_reference.py)"),
    "t3sc": ("T3SC (Bodrito et al., NeurIPS 2021)", "yes: keys equal HSIR's; same outputs (tests/test_t3sc_reference.py)"),
    "sert": ("SERT (Li et al., CVPR 2023)", "keys equal the official code's (key-set test); no installable reference"),
    "mcnet": ("MCNet (Li et al., Remote Sensing 2020)", "yes: keys equal HSIR's; same outputs (tests/test_mcnet_reference.py)"),
    "sspsr": ("SSPSR (Jiang et al., IEEE TCI 2020)", "keys equal the official code's (key-set test); no installable reference"),
    "essaformer": ("ESSAformer (Zhang et al., ICCV 2023)",
                   "keys equal the official code's (key-set test); no installable reference"),
    "promptir": ("PromptIR (Potlapalli et al., NeurIPS 2023)",
                 "keys equal the official code's (key-set test); no installable reference"),
    "ssumamba": ("SSUMamba (Fu et al., IEEE TGRS 2024)",
                 "keys equal the official code's (key-set test); no installable reference"),
    "uafl": ("UAFL (Zhang et al., CVPR 2026)", "no: the official code is not released; written from the paper"),
}
TASK_OF_FAMILY = {"denoise": "denoise-gaussian", "sr": "sr-x4", "sr-ref": "sr-ref-x4", "general": "inpaint"}
#: Networks whose CPU forward takes minutes (SSUMamba's pure-torch selective scan): one pass, 2 threads only.
SLOW = {"ssumamba"}
BANDS, SIZE, SCALE = 31, 64, 4


def forward_ms(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, threads: int, repeats: int,
               warmup: bool = True) -> float:
    """Median wall time (ms) of ``model(x)`` with ``threads`` torch threads, after one warm-up pass."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            if warmup:
                model(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 1000 * statistics.median(times)


def registry_model(name: str) -> tuple[torch.nn.Module, str]:
    """Registered backbone ``name`` in its default configuration (``paper`` for the faithful ones), as users get it."""
    from hiralign import restorers

    family = restorers.backbone(name).family
    return restorers.get(name, BANDS, TASK_OF_FAMILY[family]).eval(), family


def measure(model: torch.nn.Module, family: str, repeats: int, slow: bool = False) -> dict:
    g = torch.Generator().manual_seed(0)
    side = SIZE // SCALE if family in ("sr", "sr-ref") else SIZE
    x = torch.rand(1, BANDS, side, side, generator=g)
    extra = {"mask": (torch.rand(x.shape, generator=g) > 0.3).float()} if family == "general" else {}
    if family == "sr-ref":
        extra = {"ref": torch.rand(1, 3, SIZE, SIZE, generator=g)}
    def call(t: torch.Tensor) -> torch.Tensor:
        return model(t, **extra)

    params = sum(p.numel() for p in model.parameters())
    if slow:
        return {"params": params, "ms_1_thread": None, "ms_2_threads": forward_ms(call, x, 2, 1, warmup=False)}
    return {"params": params, "ms_1_thread": forward_ms(call, x, 1, repeats), "ms_2_threads": forward_ms(call, x, 2, repeats)}


def rows(repeats: int) -> list[dict]:
    from hiralign import restorers

    out = []
    from hiralign.restorers.paper import FAITHFUL as MODULES

    for name, (paper, weights) in FAITHFUL.items():
        model, family = registry_model(name)
        reported = getattr(MODULES[name][1], "PAPER_PARAMETERS", None)
        row = {"backbone": f"{name} (faithful, paper)", "paper": paper, **measure(model, family, repeats, name in SLOW),
               "reported": reported, "released_weights": weights}
        row["diff_pct"] = None if reported is None else 100 * (row["params"] - reported) / reported
        out.append(row)
    for name in (n for n in restorers.names() if n not in MODULES):
        model, family = registry_model(name)
        out.append({"backbone": f"{name} (registry, small)", "paper": restorers.backbone(name).description,
                    **measure(model, family, repeats), "reported": None, "diff_pct": None,
                    "released_weights": "no (stand-in)"})
    return out


def _ms(value: float | None) -> str:
    return "not run (one pass takes minutes)" if value is None else f"{value:.1f}"


def markdown(table: list[dict], machine: dict) -> str:
    lines = [f"# Backbones: parameters and CPU forward time ({BANDS} x {SIZE} x {SIZE} output)", "",
             f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores, load {machine['load']}), "
             f"torch {machine['torch']}. `python benchmarks/backbones.py`.", "",
             "| backbone | paper | parameters | reported | diff | ms (1 thread) | ms (2 threads) | released weights |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        reported = "" if r["reported"] is None else f"{r['reported']:,}"
        diff = "" if r["diff_pct"] is None else f"{r['diff_pct']:+.1f}%"
        lines.append(f"| {r['backbone']} | {r['paper']} | {r['params']:,} | {reported} | {diff} | "
                     f"{_ms(r['ms_1_thread'])} | {_ms(r['ms_2_threads'])} | {r['released_weights']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="folder for backbones_bench.md/.json (default: print only)")
    args = parser.parse_args()
    machine = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": platform.processor() or
               platform.machine(), "cores": os.cpu_count(), "load": " ".join(f"{v:.1f}" for v in os.getloadavg()),
               "torch": torch.__version__}
    table = rows(args.repeats)
    text = markdown(table, machine)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "backbones_bench.md").write_text(text)
        (out / "backbones_bench.json").write_text(json.dumps({"machine": machine, "rows": table}, indent=1))


if __name__ == "__main__":
    main()
