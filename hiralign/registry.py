"""One small name -> object registry, used for degradations, tasks, backbones, guide generators and
dataset loaders.

::

    LOADERS = Registry("dataset kind")

    @LOADERS.register("cave")
    def load_cave(path): ...

    LOADERS.get("cave")        # the function
    LOADERS.get("bogus")       # UnknownNameError: unknown dataset kind 'bogus'; known: cave
    LOADERS.names()            # ["cave"]

Names keep their registration order. Registering a name twice is an error (``ValueError``): a
second registration would silently replace the first. ``get`` raises the registry's ``error`` class
(:class:`UnknownNameError` by default, a :class:`~hiralign.errors.UserError` and a ``ValueError``).
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from hiralign.errors import UserError

T = TypeVar("T")
_MISSING = object()


class UnknownNameError(UserError, ValueError):
    """A name that no registry entry has; the message lists the known names."""


class Registry(Generic[T]):
    """Objects by name for one ``kind`` of thing (``"task"``, ``"backbone"`` ...).

    ``error`` is the exception class :meth:`get` raises for an unknown name (it is called with the
    message only). Read access is dict-like: ``name in reg``, ``reg[name]`` (``KeyError``),
    ``iter(reg)``, ``len(reg)``, ``items()``, ``values()``.
    """

    def __init__(self, kind: str, error: type[Exception] = UnknownNameError):
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | object = _MISSING) -> Callable[[T], T] | T:
        """``register(name, obj)`` adds ``obj`` and returns it; ``register(name)`` is a decorator
        doing the same for the decorated object. A name registered twice raises ``ValueError``."""
        if obj is not _MISSING:
            return self._add(name, obj)  # type: ignore[arg-type]

        def decorate(item: T) -> T:
            return self._add(name, item)

        return decorate

    def _add(self, name: str, obj: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object (e.g. to clean up after a test)."""
        if name not in self._entries:
            raise self.error(self.unknown_message(name))
        return self._entries.pop(name)

    def unknown_message(self, name: object, where: str = "") -> str:
        """``"[where: ]unknown <kind> 'name'; known: a, b, c"``."""
        prefix = f"{where}: " if where else ""
        return f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self._entries) or '(none)'}"

    def get(self, name: str, where: str = "") -> T:
        """The object registered as ``name``; an unknown name raises ``error`` listing the known
        ones (``where``, e.g. a file, prefixes the message)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise self.error(self.unknown_message(name, where)) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


__all__ = ["Registry", "UnknownNameError"]
