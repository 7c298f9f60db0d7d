"""``hiralign data PATH...``: load hyperspectral files and print a summary of each."""
from __future__ import annotations

import argparse

HELP = "load hyperspectral files and print a summary of each"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--kind", help="cave | icvl | kaist | hsidwrd | generic (guessed if omitted)")


def handle(args: argparse.Namespace) -> int:
    from hiralign.data import load

    for path in args.paths:
        cube = load(path, kind=args.kind)
        print(cube)
    return 0
