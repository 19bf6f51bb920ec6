"""The services' tuning of Python's collector (`wiring.memory`): young collections spaced out,
and what a service holds once started set aside from every later collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from config.settings import load_settings
from wiring.memory import freeze_heap_after, space_young_collections


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_young_collections_are_spaced_and_the_older_thresholds_kept(collector: None) -> None:
    before = gc.get_threshold()
    space_young_collections(load_settings().memory.gc_young_threshold)
    assert gc.get_threshold() == (10_000, *before[1:])
    space_young_collections(0)  # 0: leave the collector as it is
    assert gc.get_threshold() == (10_000, *before[1:])


def test_what_lives_when_the_timer_fires_is_frozen_and_garbage_is_collected_first(collector: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    kept = [Node() for _ in range(100)]
    garbage = weakref.ref(Node())  # a cycle nothing refers to
    assert garbage() is not None
    timer = freeze_heap_after(0.01)
    assert timer is not None and timer.daemon
    timer.join(10)
    assert garbage() is None, "garbage was frozen instead of freed"
    assert gc.get_freeze_count() >= len(kept)
    # Frozen: no generation holds them any more, so no collection walks them.
    assert not [o for o in gc.get_objects() if isinstance(o, Node)]
    assert freeze_heap_after(0) is None
