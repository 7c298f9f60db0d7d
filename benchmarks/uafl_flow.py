"""Can UAFL's coarse flow find the misalignment? The paper's convolution against our block matching.

Two measurements on the real CAVE scenes of ``../shared/data`` (or --scenes), x4 ``sr-ref``
degradations (hiralign.degrade), end-point error (EPE, px) of the coarse flow against the flow that
registers the reference (minus the seeded field), 16 px border excluded:

1. **the paper's CPFP trained alone, with the true field as its target**: the first-level abundance
   and reference embeddings of the tiny UAFL and :class:`hiralign.restorers.uafl.ConvCoarseFlow`
   trained by Adam (lr 1e-3, batch 8, 64 px crops) to minimise the L1 distance to the true flow of
   pure 4 px translations in random directions (no rotation, zoom or elastic part). A zero flow
   scores 4.0 px; a predictor that can measure a displacement goes below it;
2. **our block matching** (:func:`hiralign.restorers.uafl.matched_coarse_flow`, nothing learnt) on
   every scene with the benchmark's misalignments (4 and 8 px plus up to 1 deg rotation, 1 % zoom
   and a 1 px elastic field).

Writes ``results/uafl_flow.md``.

    python benchmarks/uafl_flow.py             # about a minute on 2 cores
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRANSLATION = {"shift": 4.0, "rotation_deg": 0.0, "zoom": 0.0, "elastic": 0.0}


def degraded(cube, seed: int, **misalignment):
    from hiralign import degrade as dg

    return dg.degrade("sr-ref", cube.data, seed=seed, scale=4, wavelengths=cube.wavelengths, **misalignment)


def abundances(lr: torch.Tensor) -> torch.Tensor:
    from hiralign.restorers.uafl import unmix

    return unmix(F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False), 3)[1]


def translation_batch(cubes, rng: np.random.Generator, n: int, size: int) -> tuple[torch.Tensor, ...]:
    """``(A, ref, target flow)`` of ``n`` random crops of pure 4 px translations."""
    xs, refs, flows = [], [], []
    for _ in range(n):
        cube = cubes[rng.integers(len(cubes))]
        d = degraded(cube, int(rng.integers(1 << 30)), **TRANSLATION)
        top, left = (4 * int(rng.integers(2, (s - size) // 4 - 2)) for s in cube.data.shape[1:])
        xs.append(d.data[:, top // 4 : (top + size) // 4, left // 4 : (left + size) // 4])
        refs.append(d.info["ref"][:, top : top + size, left : left + size])
        flows.append(-d.info["flow"][:, top : top + size, left : left + size])
    as_t = lambda a: torch.from_numpy(np.stack(a)).float()  # noqa: E731
    return abundances(as_t(xs)), as_t(refs), as_t(flows)


class SupervisedConvFlow(nn.Module):
    """The tiny UAFL's first-level embeddings and the paper's convolutional CPFP."""

    def __init__(self, channels: int = 8):
        super().__init__()
        from hiralign.restorers.uafl import ConvCoarseFlow

        self.embed, self.embed_ref = nn.Conv2d(3, channels, 3, padding=1), nn.Conv2d(3, channels, 3, padding=1)
        self.coarse = ConvCoarseFlow(channels)

    def forward(self, a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return self.coarse(self.embed(a), self.embed_ref(ref))


def epe(flow: torch.Tensor, target: torch.Tensor, border: int = 16) -> tuple[float, float]:
    error = (flow - target)[..., border:-border, border:-border].norm(dim=1)
    return float(error.mean()), float(error.median())


def supervised_conv_fit(cubes, steps: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    model = SupervisedConvFlow()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng, test = np.random.default_rng(seed), translation_batch(cubes, np.random.default_rng(seed + 1), 16, 64)
    rows = []
    for step in range(steps + 1):
        if step % max(1, steps // 4) == 0:
            with torch.no_grad():
                mean, median = epe(model(test[0], test[1]), test[2])
            rows.append({"step": step, "epe": mean, "median": median})
            print(f"  conv CPFP, supervised: step {step} EPE {mean:.2f} px", flush=True)
        a, ref, target = translation_batch(cubes, rng, 8, 64)
        loss = (model(a, ref) - target).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return rows


def matching_errors(scenes, seed: int) -> list[dict]:
    from hiralign.restorers.uafl import MATCHING, matched_coarse_flow

    rows = []
    for name, cube in scenes:
        for px in (4, 8):
            d = degraded(cube, seed + px, shift=float(px))
            flow = matched_coarse_flow(abundances(torch.from_numpy(d.data)[None]), torch.from_numpy(d.info["ref"])[None], **MATCHING)
            target = -torch.from_numpy(d.info["flow"])[None]
            mean, median = epe(flow, target)
            rows.append({"scene": name, "misalignment_px": px, "epe": mean, "median": median, "zero_flow": epe(0 * target, target)[0]})
            print(f"  matching, {name} {px} px: EPE {mean:.2f} px (zero flow {rows[-1]['zero_flow']:.2f})", flush=True)
    return rows


def render(args, supervised: list[dict], matched: list[dict]) -> str:
    import subprocess

    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    lines = ["# UAFL's coarse flow: the paper's convolution against block matching", "",
             f"`python benchmarks/uafl_flow.py --steps {args.steps}` on {datetime.now(timezone.utc).isoformat(timespec='seconds')}; "
             f"git {git}. End-point error (px) against the registering flow, 16 px border excluded; one seed.", "",
             "## The paper's CPFP (3x3 convolution of the pooled pair), trained alone on the true field", "",
             "Pure 4 px translations in random directions (a zero flow scores 4.0 px); 16 test crops of 64 px.", "",
             "| step | mean EPE | median EPE |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['epe']:.2f} | {r['median']:.2f} |" for r in supervised]
    lines += ["", "## Our block matching (nothing learnt), whole scenes", "",
              "The benchmark's misalignments: a translation of 4 or 8 px plus up to 1 deg rotation, 1 % zoom and a 1 px elastic field.", "",
              "| scene | misalignment | mean EPE | median EPE | zero flow |", "|---|---|---|---|---|"]
    lines += [f"| {r['scene']} | {r['misalignment_px']} px | {r['epe']:.2f} | {r['median']:.2f} | {r['zero_flow']:.2f} |" for r in matched]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=None, help="CAVE .mat scenes (default ../shared/data/cave_*_256.mat)")
    parser.add_argument("--steps", type=int, default=400, help="supervised training steps of the convolutional CPFP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "results"), help="folder for uafl_flow.md")
    args = parser.parse_args(argv)
    from hiralign.data.loaders import load_cave

    paths = args.scenes or [str(p) for p in sorted(SHARED_DATA.glob("cave_*_256.mat"))]
    if not paths:
        raise SystemExit("no CAVE scenes found in ../shared/data: pass --scenes")
    torch.set_num_threads(2)
    scenes = [(Path(p).stem.removeprefix("cave_").removesuffix("_256").removesuffix("_ms"), load_cave(p)) for p in paths]
    supervised = supervised_conv_fit([c for _, c in scenes], args.steps, args.seed)
    matched = matching_errors(scenes, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "uafl_flow.md").write_text(report := render(args, supervised, matched))
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
