"""The services' tuning of Python's collector (`wiring.memory`): young collections spaced out,
and what a service holds once started set aside from every later collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from config.settings import load_settings
from wiring.memory import collect_start_up_garbage, freeze_heap_after, space_young_collections


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


def test_the_freeze_walks_only_the_young_generations_the_old_one_was_collected_at_start(collector: None) -> None:
    """The full collection runs once the service is built, before it serves; the freeze while
    it serves collects no older generation than the middle one, so it stops nothing for long
    (a full collection of a built hub held the GIL 100-200 ms: a stall in every request's path)."""
    class Node:
        def __init__(self) -> None:
            self.me = self

    start_up_garbage = weakref.ref(Node())
    collect_start_up_garbage()
    assert start_up_garbage() is None
    generations: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(record)
    try:
        timer = freeze_heap_after(0.01)
        assert timer is not None
        timer.join(10)
    finally:
        gc.callbacks.remove(record)
    assert generations and max(generations) <= 1, generations


def test_a_hub_service_freezes_what_its_hub_holds_once_built(collector: None) -> None:
    """`hub.py`'s services time the freeze from the hub's build, not from the process's start:
    however long the store took to answer, what the hub holds is frozen (after the collection)."""
    from types import SimpleNamespace

    from hub import _service_hub
    from tests.support import wait_for

    class Held:
        def __init__(self) -> None:
            self.me = self

    memory = SimpleNamespace(gc_freeze_after=0.01)
    built = _service_hub(lambda: SimpleNamespace(settings=SimpleNamespace(memory=memory),
                                                 held=[Held() for _ in range(50)]))
    wait_for(lambda: not [o for o in gc.get_objects() if isinstance(o, Held)], timeout=10,
             what="the hub's objects to be frozen")
    assert len(built.held) == 50
