"""A timing taken alone and beside a busy pure-Python thread of the same process (which holds the
GIL for its switch interval at a time), for tests that timings do not read fast under it."""

from __future__ import annotations

import threading
from collections.abc import Callable


def alone_and_beside_a_busy_thread(measure: Callable[[], float]) -> tuple[float, float]:
    """(the faster of two timings alone, one before and one after; the timing beside the thread):
    load only slows a run, so the faster alone is the nearer the true time."""
    alone = measure()
    stop = threading.Event()

    def busy():
        x = 0
        while not stop.is_set():
            x += 1

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        beside = measure()
    finally:
        stop.set()
        thread.join()
    return min(alone, measure()), beside
