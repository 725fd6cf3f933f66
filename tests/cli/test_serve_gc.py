"""`tlsrpt serve` tunes the garbage collector once started (`app.cli.serve.tune_gc`)."""

from __future__ import annotations

import gc
from typing import Any, cast

from app.cli.serve import GC_YOUNG_THRESHOLD, tune_gc


async def test_the_start_hook_freezes_the_heap_and_collects_young_objects_less_often() -> None:
    threshold = gc.get_threshold()
    try:
        await tune_gc(cast(Any, None))
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        assert gc.get_freeze_count() > 0  # what lives as long as the process
        # Cycles are still collected.
        cycle: list[Any] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
