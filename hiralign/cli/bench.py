"""``hiralign bench NAME [ARGS...]``: run ``benchmarks/NAME.py`` with the given arguments (``warp-fidelity``
and ``warp_fidelity`` name the same script)."""
from __future__ import annotations

import argparse
import runpy
import sys

from hiralign.cli._common import REPO_ROOT, UsageError

HELP = "run benchmarks/NAME.py with the given arguments"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def handle(args: argparse.Namespace) -> int:
    folder = REPO_ROOT / "benchmarks"
    script = folder / f"{args.name.replace('-', '_')}.py"
    if not script.exists():
        available = sorted(p.stem.replace("_", "-") for p in folder.glob("*.py"))
        raise UsageError(f"no benchmark {args.name!r} in {folder}; available: {available}")
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0
