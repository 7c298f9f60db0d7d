"""``hiralign pretrain``: pretrain a restorer on the source domain (embedded benchmark or ICVL),
save the checkpoint and print its source and target scores (:mod:`hiralign.train.source`)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from hiralign.cli._common import add_debug_flag, guarded

HELP = "pretrain a restorer on the source domain (hiralign pretrain --help)"
DESCRIPTION = "Pretrain a restorer on the source domain (embedded benchmark or ICVL)."


def configure(p: argparse.ArgumentParser) -> None:
    from hiralign.train import LOSSES, TrainConfig

    defaults = TrainConfig()
    p.add_argument("--task", default="denoise-gaussian", help="task name (hiralign.tasks.TASKS)")
    p.add_argument("--backbone", default=None, help="registered backbone, or a plugged one: package.module:factory, file.py:factory or an entry point "
                        "of hiralign.backbones (default: the task's CPU default)")
    p.add_argument("--size", default=None, help="named configuration of a registered backbone: small/large for the "
                   "stand-ins, paper/tiny for the faithful ones (default: its first)")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=defaults.steps_per_epoch)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--patch-size", type=int, default=defaults.patch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--loss", default=defaults.loss, choices=sorted(LOSSES))
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors); resumes from OUT.resume.pt")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seeds the benchmark, patches, noise and weights")
    p.add_argument("--image-size", type=int, default=64, help="benchmark image size / ICVL tile size")
    p.add_argument("--icvl", default=None, metavar="PATH", help="ICVL .mat file or folder (instead of the benchmark)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing resume state")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def pretrain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiralign pretrain", description=DESCRIPTION)
    configure(parser)
    add_debug_flag(parser)
    return parser


def handle(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Train, save the checkpoint, print source and target scores; ``argv`` is recorded in it."""
    import torch

    from hiralign.runtime import resolve_device
    from hiralign.train import (TrainConfig, evaluate_restorer, pretrain, read_checkpoint_config, save_checkpoint,
                                source_cubes)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                         patch_size=args.patch_size, lr=args.lr, loss=args.loss, seed=args.seed, device=device)
    train_cubes, val_cubes, target, source = source_cubes(args.icvl, args.image_size, args.seed)
    tic, cpu_tic = time.perf_counter(), time.process_time()
    result = pretrain(args.task, train_cubes, val_cubes, config, backbone=args.backbone, size=args.size,
                      out=args.out, source=source, progress=not args.quiet, resume=not args.no_resume)
    minutes, cpu_minutes = (time.perf_counter() - tic) / 60, (time.process_time() - cpu_tic) / 60
    scores = {"source_test": result.final}
    if target:
        scores["target_observed"] = evaluate_restorer(result.model, target, args.task, device=device)
    save_checkpoint(args.out, result.model, {**read_checkpoint_config(args.out), "evaluation": scores,
                                             "train_minutes": minutes, "train_cpu_minutes": cpu_minutes,
                                             "command": "hiralign pretrain " + " ".join(argv or [])})
    for split, s in scores.items():
        print(f"{split:>16s}: input PSNR {s['input_psnr']:.2f} dB -> restored {s['psnr']:.2f} dB "
              f"(SSIM {s['ssim']:.3f}, SAM {s['sam']:.2f} deg)")
    print(f"saved {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB) after {minutes:.1f} min "
          f"({cpu_minutes:.1f} CPU min)")
    return 0


def pretrain_main(argv: Sequence[str] | None = None, debug: bool = False) -> int:
    """``hiralign pretrain ARGS`` as a function (returns the exit status; 2: a user error)."""
    args = pretrain_parser().parse_args(argv)
    argv = [a for a in (argv or []) if a != "--debug"]
    return guarded("pretrain", lambda: handle(args, argv), debug or getattr(args, "debug", False))
