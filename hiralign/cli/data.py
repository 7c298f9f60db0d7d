"""``hiralign data PATH...``: load hyperspectral files and print a summary of each.

``hiralign data make-fixture ROOT [--size N] [--seed S] [--shared-data PATH] [--no-models]`` writes a
FIXTURE dataset root instead: tiny CAVE, KAIST, ICVL and HSIDwrD trees laid out as the real downloads
(and ``models/``), partly synthetic, partly crops of the real scenes of the shared data folder
(hiralign.data.fixture; docs/datasets.md, "A fixture dataset root"). To summarise a file named
``make-fixture``, write ``./make-fixture``.
"""
from __future__ import annotations

import argparse

from hiralign.cli._common import UsageError

HELP = "load hyperspectral files and print a summary of each; or `make-fixture ROOT` to write a fixture data root"
MAKE_FIXTURE = "make-fixture"
_FIXTURE_OPTIONS = ("size", "seed", "shared_data", "no_models")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help=f"files to summarise, or `{MAKE_FIXTURE} ROOT` (the folder to write)")
    parser.add_argument("--kind", help="cave | icvl | kaist | hsidwrd | generic (guessed if omitted)")
    fixture = parser.add_argument_group(f"{MAKE_FIXTURE} options")
    fixture.add_argument("--size", type=int, default=None,
                         help="scene side in px (KAIST / ICVL: the short side; default 32)")
    fixture.add_argument("--seed", type=int, default=None, help="seed of the synthetic scenes and noise (default 0)")
    fixture.add_argument("--shared-data", default=None, metavar="PATH",
                         help="folder of real scenes to crop (MATLAB copies of CAVE scenes and Samson, docs/datasets.md, "
                              "'A fixture dataset root'; default: the project CI's shared data folder beside the "
                              "repository, if present; else every scene is synthetic)")
    fixture.add_argument("--no-models", action="store_true", default=None,
                         help="do not write the tiny unCLIP / CLIP model folders under models/")


def handle(args: argparse.Namespace) -> int:
    if args.paths[0] == MAKE_FIXTURE:
        return make_fixture(args)
    given = [f"--{name.replace('_', '-')}" for name in _FIXTURE_OPTIONS if getattr(args, name, None) is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only with `hiralign data {MAKE_FIXTURE} ROOT`")
    from hiralign.data import load

    for path in args.paths:
        cube = load(path, kind=args.kind)
        print(cube)
    return 0


def make_fixture(args: argparse.Namespace) -> int:
    """``hiralign data make-fixture ROOT``: write the fixture root and say what it holds."""
    from hiralign.data.fixture import default_shared_data, write_fixture_root

    if len(args.paths) != 2:
        raise UsageError(f"usage: hiralign data {MAKE_FIXTURE} ROOT [--size N] [--seed S] [--shared-data PATH] "
                         f"[--no-models] (one ROOT, got {len(args.paths) - 1})")
    if args.kind is not None:
        raise UsageError(f"--kind does not go with {MAKE_FIXTURE}")
    shared = args.shared_data if args.shared_data is not None else default_shared_data()
    root = write_fixture_root(args.paths[1], shared_data=shared, size=32 if args.size is None else args.size,
                              seed=0 if args.seed is None else args.seed, models=not args.no_models)
    print(f"{root}: fixture dataset root written ({'real scenes from ' + str(shared) if shared else 'all synthetic'}); "
          f"see {root / 'README.md'}. It is NOT the datasets.")
    return 0
