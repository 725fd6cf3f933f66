"""`tlsrpt serve` takes what it loaded at start out of the cyclic collector's walks."""

from __future__ import annotations

import gc
import weakref

from app.cli.runtime import GC_THRESHOLD, freeze_heap
from app.resources import Resources


class Node:
    me: Node | None = None


async def test_freeze_heap_freezes_what_is_loaded_and_collects_less_often(
    resources: Resources,
) -> None:
    threshold = gc.get_threshold()
    try:
        await freeze_heap(resources)
        # The modules, the app and the resources are now out of every collection.
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == (GC_THRESHOLD, *threshold[1:])
        # What is allocated afterwards is still collected: a cycle is freed.
        node = Node()
        node.me = node
        gone = weakref.ref(node)
        del node
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
