"""The interpreter's cyclic garbage collector beside a latency-bound server.

A full collection walks every object the process holds, and a serving process holds the model's
libraries, the app and the warmed-up pipeline: about 450,000 objects with paella-mini, whose full
collection took 220 ms on the 2-core development machine, every thread waiting meanwhile. Nothing made at
start-up ever becomes garbage, so once warm the worker moves it all into the collector's permanent
generation (`gc.freeze`): later collections walk only what requests made. `paella_gc_pause_seconds`
shows what collections still cost, by generation.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from service import metrics

_started: list[float] = []  # the collection in progress: one at a time, under the interpreter lock


def freeze_start_up() -> int:
    """Collect once, then exempt every object alive now from later collections; how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def watch_pauses() -> None:
    """Time every collection into `paella_gc_pause_seconds` (once per process)."""
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        metrics.GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - _started.pop())
