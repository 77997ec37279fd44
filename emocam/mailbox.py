"""A latest-value slot between threads: put() overwrites, so a slow reader skips stale values instead of queueing."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: T | None = None
        self._version = 0
        self._closed = False
        self._taken = True
        self.dropped = 0  # values overwritten before anyone took them

    def put(self, value: T) -> None:
        with self._cond:
            if self._version and not self._taken:
                self.dropped += 1
            self._value = value
            self._version += 1
            self._taken = False
            self._cond.notify_all()

    def peek(self) -> T | None:
        """The latest value, whether or not it was seen before (never blocks)."""
        return self._value

    def take(self, after: int, timeout: float | None = None) -> tuple[T | None, int]:
        """Wait for a value newer than version `after`; returns (value, version), or (None, after) on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._version > after or self._closed, timeout):
                return None, after
            if self._version <= after:
                return None, after
            self._taken = True
            return self._value, self._version

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
