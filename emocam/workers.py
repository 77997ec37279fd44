"""Background writer threads fed by bounded queues."""

from __future__ import annotations

import queue
import threading


def stop_worker(thread: threading.Thread, q: queue.Queue) -> None:
    """Queue the end marker (None) after what is already queued and wait for the thread to finish it all.
    A thread that died on an error no longer reads the queue, so a full queue must not block forever."""
    while thread.is_alive():
        try:
            q.put(None, timeout=0.1)
            break
        except queue.Full:
            continue
    thread.join()
