"""Command line: ``hiralign run``, ``hiralign sweep``, ``hiralign reproduce``, ``hiralign pretrain``, ``hiralign data``, ``hiralign bench``.

Expected user errors (a bad file or parameter, a missing path, a stale or corrupt artifact: every
:class:`~hiralign.errors.UserError`) print ``hiralign <command>: <what went wrong>`` on stderr and
exit with status 2; ``hiralign --debug <command> ...`` shows their traceback instead. Any other
exception is a bug and keeps its traceback. Each command lives in its own module
(:mod:`hiralign.cli.run`, ``sweep``, ``data``, ``bench``, ``pretrain``, ``reproduce``); the library keeps none.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hiralign.cli import bench, data, pretrain, reproduce, run, sweep
from hiralign.cli._common import REPO_ROOT, UsageError, add_debug_flag, guarded, report

#: Commands with their own parser, built only when they run (building it imports torch / papermill).
_OWN_PARSER = {"pretrain": pretrain.pretrain_main, "reproduce": reproduce.reproduce_main}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiralign", description=__doc__.split("\n")[0])
    add_debug_flag(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in (("run", run), ("sweep", sweep), ("data", data)):
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.configure(command)
        add_debug_flag(command)
        command.set_defaults(func=module.handle)
    for name, module in (("pretrain", pretrain), ("reproduce", reproduce)):  # listed here, parsed by _OWN_PARSER
        sub.add_parser(name, help=module.HELP, add_help=False)
    command = sub.add_parser("bench", help=bench.HELP, description=bench.__doc__)
    bench.configure(command)  # every argument after NAME goes to the benchmark
    command.set_defaults(func=bench.handle)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hiralign`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    if argv[:1] and argv[0] in _OWN_PARSER:  # its own argparse owns every option after the word
        return _OWN_PARSER[argv[0]](argv[1:], debug=debug)
    args = build_parser().parse_args(argv)
    return guarded(args.command, lambda: args.func(args), debug or getattr(args, "debug", False))


__all__ = ["REPO_ROOT", "UsageError", "build_parser", "guarded", "main", "report"]
