"""What every command shares: the repository root and the one way user errors are reported."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from hiralign.errors import UserError

#: The checkout holding benchmarks/, notebooks/, params/ (hiralign/cli/ is two levels below it).
REPO_ROOT = Path(__file__).resolve().parents[2]


class UsageError(UserError, ValueError):
    """A command-line argument is malformed (the message shows the expected form)."""


def add_debug_flag(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """``--debug``: show the traceback of user errors instead of the one-line message."""
    parser.add_argument("--debug", action="store_true", default=False if top_level else argparse.SUPPRESS,
                        help="show the full traceback of an error instead of a one-line message")


def report(command: str, err: BaseException) -> int:
    """Print ``hiralign <command>: <message>`` to stderr; the exit status of a user error (2)."""
    print(f"hiralign {command}: {err}", file=sys.stderr)
    return 2


def guarded(command: str, handler: Callable[[], int | None], debug: bool = False) -> int:
    """Run ``handler``; a :class:`~hiralign.errors.UserError` is reported in its own words with exit
    status 2 (re-raised with ``debug``); any other exception is a bug and propagates."""
    try:
        return handler() or 0
    except UserError as err:
        if debug:
            raise
        return report(command, err)
