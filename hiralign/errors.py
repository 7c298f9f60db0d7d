"""The one base class of expected user errors.

A :class:`UserError` is something the user can fix (a bad file, a bad parameter, a missing path, a
stale or corrupt artifact, a checkpoint of another task); its message says what, where and what to
do. The command line prints such errors in one or two lines and exits with status 2; any other
exception is a bug and keeps its traceback. Library error classes subclass it next to the builtin
they always were (``class DatasetError(UserError, ValueError)``), so existing ``except`` clauses keep
working.
"""
from __future__ import annotations


class UserError(Exception):
    """An expected error the user can fix; the message names the problem, the place and the remedy."""
