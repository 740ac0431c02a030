"""Named plug-in points: search spaces, strategies, cost models, cost sources, learned-optimizer rules
and tasks each live in one :class:`Registry`, filled by a class decorator where each plug-in is defined.

    SPACES = Registry("search space")

    @SPACES.register("nb201")
    class NB201Space(SearchSpace): ...

    SPACES.names()              # ["darts", "mobilenet", "nb201"]
    SPACES.create("nb201", c=8) # an instance; an unknown name is one CodesignError listing the known ones

Registering a name twice warns and keeps the later entry (a user's plug-in may replace a shipped one).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

from .errors import CodesignError


class Registry:
    """A name -> factory table of one kind of plug-in."""

    def __init__(self, kind: str, attribute: str | None = "name"):
        """``kind`` names the plug-in in messages ("search space"); ``attribute``, when set, is the
        class attribute that receives the registered name."""
        self.kind = kind
        self.attribute = attribute
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable:
        """Class (or function) decorator adding an entry under ``name`` (default: the class's
        ``attribute``, e.g. ``kind`` of a learned-optimizer rule)."""

        def deco(obj):
            key = name if name is not None else getattr(obj, self.attribute or "", None)
            if not key:
                raise TypeError(f"{self.kind} {obj!r} registered without a name")
            if key in self._entries:
                warnings.warn(f"{self.kind} {key!r} registered twice; the later one wins", stacklevel=2)
            self._entries[key] = obj
            if self.attribute and name is not None and isinstance(obj, type):
                setattr(obj, self.attribute, key)
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        """The registered factory; an unknown name is a CodesignError listing the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise CodesignError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def create(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def check(self, name: str) -> str:
        """``name`` if registered, else the CodesignError of ``get``."""
        self.get(name)
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
