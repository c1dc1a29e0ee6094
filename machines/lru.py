"""A small thread-safe LRU map for the per-process caches: parsed definitions, rendered
diagrams, the executions a process persisted last. Pure Python: no Django.

functools.lru_cache does not fit those two: their keys are computed from arguments that
are not all hashable (a definition document, a URL function), and the value is built
outside the lock so that one slow build does not hold up every other reader.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRU(Generic[V]):
    """At most `size` entries, and at most `max_weight` in total when `weigh(value)` is given
    (the rendered diagrams: bytes); the least recently used one goes first."""

    def __init__(self, size: int, *, max_weight: int | None = None,
                 weigh: Callable[[V], int] | None = None):
        self.size = size
        self.max_weight, self.weigh = max_weight, weigh
        self.weight = 0
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def _weight(self, value: V) -> int:
        return self.weigh(value) if self.weigh else 0

    def _over(self) -> bool:
        return len(self._items) > self.size or (
            self.max_weight is not None and self.weight > self.max_weight)

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value for `key`, made by `make()` (outside the lock) when missing."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        self.put(key, value)
        return value

    def find(self, key: Hashable) -> V | None:
        """The value for `key` (now the most recently used), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            if key in self._items:
                self.weight -= self._weight(self._items[key])
            self._items[key] = value
            self.weight += self._weight(value)
            self._items.move_to_end(key)
            while self._over() and self._items:
                _, gone = self._items.popitem(last=False)
                self.weight -= self._weight(gone)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            if key in self._items:
                self.weight -= self._weight(self._items.pop(key))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.weight = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items
