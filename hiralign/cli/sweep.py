"""``hiralign sweep SWEEP``: every target x variant x seed run of a sweep file, then its table and figure.

Runs resume (each stage that is current is skipped) and share their common stages through a stage
cache; the results go to ``<results>/<name>.md`` / ``.json`` / ``.csv`` / ``.png`` (hiralign.sweep).
"""
from __future__ import annotations

import argparse

from hiralign.cli._common import REPO_ROOT

HELP = "run a sweep of the notebook chain (targets x variants x seeds) and write its table and figure"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep file, e.g. params/sweeps/guide-diversity.yaml")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time on this machine (default 1)")
    parser.add_argument("--targets", nargs="+", default=[], metavar="NAME", help="only these targets of the sweep")
    parser.add_argument("--runs-root", default=str(REPO_ROOT / "runs" / "sweeps"), help="folder of the run directories")
    parser.add_argument("--results", default=str(REPO_ROOT / "results"), help="folder of the result files")
    parser.add_argument("--force", action="store_true", help="rerun every stage of every run")
    parser.add_argument("--dry-run", action="store_true", help="write and check every run's parameter file, run nothing")


def handle(args: argparse.Namespace) -> int:
    from hiralign.sweep import run_sweep

    paths = run_sweep(args.sweep, runs_root=args.runs_root, results_dir=args.results, jobs=args.jobs, force=args.force,
                      targets=args.targets, notebooks_dir=REPO_ROOT / "notebooks", dry_run=args.dry_run)
    if paths:
        print("\n" + paths["md"].read_text())
    return 0
