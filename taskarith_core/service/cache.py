"""A small thread-safe memo table: the page's callbacks run in threads, several users at once.

Each key is computed once even when two users ask for it together (a per-key lock), and the table
counts how often it had to compute, so tests can check that moving a slider recomputed nothing else.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Memo"]

T = TypeVar("T")


class Memo(Generic[T]):
    """``get(key, compute)``: the cached value, or ``compute()`` stored under ``key`` (LRU)."""

    def __init__(self, name: str, maxsize: int | None = None, counter: Counter | None = None):
        self.name = name
        self.maxsize = maxsize
        self.counter = counter if counter is not None else Counter()
        self._data: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def _lookup(self, key: Hashable) -> tuple[bool, T | None]:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return True, self._data[key]
            return False, None

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        found, value = self._lookup(key)
        if found:
            return value  # type: ignore[return-value]
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            found, value = self._lookup(key)
            if found:
                return value  # type: ignore[return-value]
            value = compute()
            self.counter[self.name] += 1
            with self._lock:
                self._data[key] = value
                if self.maxsize is not None:
                    while len(self._data) > self.maxsize:
                        self._data.popitem(last=False)
                self._key_locks.pop(key, None)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
