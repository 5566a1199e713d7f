"""Registries: the parts a user chooses by name (strategies, pruners, objectives, clusterers, engines, recipes,
held-out sets, evaluation tasks), each one `Registry`.

A registry maps names to items. Plug-ins add theirs with `register` (a call or a decorator); `get` returns an item
or refuses an unknown name with `UnknownNameError`: "unknown <kind> '<name>'; known: a, b, c; did you mean b?".
Built-ins whose code is heavy to import are declared by where they live (`builtins`: name -> "module" or
"module:attribute"), so `names()` and `in` answer without importing them (the CLI builds its help from names);
`get` imports the module on first use. This module imports nothing but the standard library.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not among the `known` ones of `kind`; the message lists them and the closest ones. A
    ValueError, so the CLI prints it as a one-line refusal."""

    def __init__(self, kind: str, name: object, known: Collection[str]) -> None:
        self.kind, self.name, self.known = kind, name, list(known)
        message = f"unknown {kind} {name!r}; known: {', '.join(self.known) or 'none'}"
        close = difflib.get_close_matches(str(name), self.known, n=3)
        if close:
            message += f"; did you mean {' or '.join(close)}?"
        super().__init__(message)


def check_name(kind: str, name: object, known: Collection[str]) -> None:
    """Refuse (`UnknownNameError`) a `name` not in `known`, for a fixed set of choices that is not a registry."""
    if name not in known:
        raise UnknownNameError(kind, name, known)


class Registry(Generic[T]):
    """Named items of one `kind` ("selection strategy", "pruning method", ...).

    `builtins` declares built-in items without importing them: name -> "module" (the module registers the name
    when imported, e.g. with a decorator) or "module:attribute" (the item is that attribute). Registering a
    declared name imports its module first, so a plug-in cannot shadow a built-in it has not loaded yet.
    Listing (`names`, `in`, iteration) never imports; `get`, `items` and `values` do.
    """

    def __init__(self, kind: str, builtins: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._builtins = dict(builtins or {})
        self._items: dict[str, T] = {}
        # The items built-ins were loaded as: kept by `restore`, since loading one is not a change to undo.
        self._loaded_builtins: dict[str, T] = {}

    @overload
    def register(self, name: str, item: None = None, *, replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, item: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, item: Any = None, *, replace: bool = False) -> Any:
        """Register `item` as `name` and return it; without `item`, a decorator that registers what it decorates.

        Refuses (ValueError) a name already registered, unless `replace`.
        """
        if item is None:
            return lambda decorated: self.register(name, decorated, replace=replace)
        if name in self._builtins and name not in self._items:
            # The module declared for `name` registers it as it is imported: import it first (a no-op while it
            # is being imported, which is when a built-in registers itself), so a plug-in's `name` is a duplicate.
            self._load(name)
        if name in self._items and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if name in self._builtins and name not in self._loaded_builtins:
            self._loaded_builtins[name] = item
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item registered as `name`, importing its module if it is a built-in not loaded yet.

        Refuses an unknown name (`UnknownNameError`, listing the known ones and the closest).
        """
        if name not in self:
            raise UnknownNameError(self.kind, name, self.names())
        if name not in self._items:
            self._load(name)
            if name not in self._items:
                raise RuntimeError(f"{self._builtins[name]} did not register {self.kind} {name!r}")
        return self._items[name]

    def check(self, name: str) -> str:
        """`name`, if it is registered or declared (nothing is imported); refuses it as `get` does otherwise."""
        if name not in self:
            raise UnknownNameError(self.kind, name, self.names())
        return name

    def names(self) -> list[str]:
        """Every registered or declared name, sorted; imports nothing."""
        return sorted({*self._builtins, *self._items})

    def items(self) -> list[tuple[str, T]]:
        """(name, item) for every name, sorted by name; imports every built-in."""
        return [(name, self.get(name)) for name in self.names()]

    def values(self) -> list[T]:
        """Every item, sorted by name; imports every built-in."""
        return [item for _, item in self.items()]

    def __contains__(self, name: object) -> bool:
        # Not a string (a list from a YAML config): no name, refused like any unknown one rather than unhashable.
        return isinstance(name, str) and (name in self._items or name in self._builtins)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"

    def snapshot(self) -> dict[str, T]:
        """What is registered now, for `restore` (tests undo what a plug-in registers)."""
        return dict(self._items)

    def restore(self, snapshot: dict[str, T]) -> None:
        """Register exactly what `snapshot` held, and the built-ins loaded since (as they were loaded)."""
        self._items = {**self._loaded_builtins, **snapshot}

    def _load(self, name: str) -> None:
        module_name, _, attribute = self._builtins[name].partition(":")
        module = importlib.import_module(module_name)
        if attribute and name not in self._items:
            self._items[name] = self._loaded_builtins[name] = getattr(module, attribute)
