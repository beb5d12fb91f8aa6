"""How a guard times its detector against its budget (`guards.*.timeout`).

In this thread's CPU time, with the garbage collector held off meanwhile: the budget is
the detector's own work, not the wait for a core on a loaded machine, nor a collection
of the whole heap that happens to fall inside it (either made a correct scan of a short
text "take" 80 ms, and fail closed). The collector runs after, as it would have.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

detector_clock = time.thread_time


def run_timed(
    check: Callable[[], T], clock: Callable[[], float] = detector_clock
) -> tuple[T, float]:
    """The detector's result and the seconds it took; its exceptions propagate."""
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    started = clock()
    try:
        return check(), clock() - started
    finally:
        if collecting:
            gc.enable()
