"""The control state shared by the pipeline, the OBS controller and the CLI: swapped whole, never edited in place."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable


@dataclass(frozen=True)
class Control:
    preset: str
    hidden: frozenset[str] = frozenset()  # annotators switched off in any preset
    selection: dict[str, Any] = field(default_factory=dict)  # e.g. {"layer": 3, "class": "happy"}
    recording: bool = False
    exporting: bool = False


class ControlState:
    def __init__(self, initial: Control):
        self._lock = threading.Lock()
        self._value = initial
        self._listeners: list[Callable[[Control, Control], None]] = []

    def get(self) -> Control:
        return self._value  # one reference read: atomic, and the object never changes

    def update(self, **changes: Any) -> Control:
        with self._lock:
            old = self._value
            self._value = new = replace(old, **changes)
        for listener in self._listeners:
            listener(old, new)
        return new

    def subscribe(self, listener: Callable[[Control, Control], None]) -> None:
        self._listeners.append(listener)
