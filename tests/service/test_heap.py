"""The garbage collector beside the server: the start-up's objects frozen once warm, pauses measured."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest

from model.pipeline import Pipeline
from service import heap
from service.app import make_worker
from service.settings import Settings
from tests.service.fakes import inprocess
from tests.service.live import metric


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_freezing_exempts_every_live_object_from_full_collections(unfrozen: None) -> None:
    assert gc.get_freeze_count() == 0
    frozen = heap.freeze_start_up()
    assert frozen == gc.get_freeze_count() and frozen > 10_000  # pytest, torch, the app's modules...
    assert len(gc.get_objects(generation=2)) < frozen / 10  # what a full collection still walks


def test_collections_are_timed_by_generation() -> None:
    heap.watch_pauses()
    heap.watch_pauses()  # once per process, however often it is asked
    assert gc.callbacks.count(heap._observe) == 1

    def full() -> float:
        exposed = prometheus_client.generate_latest().decode()
        return metric(exposed, "paella_gc_pause_seconds_count", 'generation="2"')

    before = full()
    gc.collect()
    gc.collect()
    assert full() == before + 2


@pytest.mark.parametrize("setting, frozen", [("true", True), ("false", False)])
def test_the_worker_freezes_the_start_up_once_warm_unless_told_not_to(
    tiny_model_dir: Path, setting: str, frozen: bool, unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAELLA_GC_FREEZE", setting)
    settings = Settings(weights=tiny_model_dir, device="cpu", max_batch_size=2)
    worker = make_worker(settings, inprocess(), Pipeline.from_folder(tiny_model_dir))
    assert gc.get_freeze_count() == 0
    assert worker.warmup is not None
    worker.warmup()
    assert (gc.get_freeze_count() > 0) is frozen
