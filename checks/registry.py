"""A name -> item registry: duplicate names raise, an unknown name gets the closest known one.

The checks (``fixloop.checks.base.REGISTRY``) and the repair tools (``fixloop.tools.base.TOOLS``)
are both kept in one; each item has a ``name``.
"""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Stable names -> items, in registration order."""

    def __init__(self, what: str, plural: str):
        self.what = what  # "check", "repair tool": for the messages
        self.plural = plural
        self._specs: dict[str, T] = {}

    def register(self, item: T) -> None:
        name = item.name  # type: ignore[attr-defined]
        if name in self._specs:
            raise ValueError(f"a {self.what} named {name!r} is already registered")
        self._specs[name] = item

    def get(self, name: str) -> T:
        try:
            return self._specs[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._specs, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known {self.plural}: {', '.join(self._specs)}"
            raise KeyError(f"unknown {self.what} {name!r}{hint}") from None

    def names(self) -> list[str]:
        return list(self._specs)

    def __iter__(self) -> Iterator[T]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs
