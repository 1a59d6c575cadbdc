"""The timed launch's arithmetic (`service.gpu.pace`) and a paced worker on a device of known speed."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.gpu.flight import Flight
from service.gpu.pace import Curve, Pace, Pacer
from service.gpu.worker import Worker
from service.queue.jobs import Made, Slice
from tests.service.fakes import fake_execute, fake_job, fake_png, inprocess


def test_a_curve_interpolates_between_sizes_and_extrapolates_within_bounds() -> None:
    curve = Curve(smoothing=0.5)
    assert curve(4) is None
    curve.observe(8, 0.080)
    assert curve(8) == 0.080
    assert curve(16) == 0.080  # one size known: no fixed cost to scale by, so the prediction stays low
    assert curve(2) == 0.080
    curve.observe(32, 0.260)
    assert curve(16) == pytest.approx(0.080 + 0.180 * 8 / 24)
    assert curve(64) == pytest.approx(0.260 + 0.180 / 24 * 32)  # the line through 8 and 32
    assert curve(4) == pytest.approx(0.080 - 0.180 / 24 * 4)
    curve.observe(8, 0.100)
    assert curve(8) == pytest.approx(0.090)  # a running mean
    curve.observe(1, 0.001)
    assert curve(2) == pytest.approx(0.001 + 0.089 / 7)


def test_a_curve_never_predicts_past_proportion_above_nor_below_its_share() -> None:
    curve = Curve(smoothing=1.0)
    curve.observe(4, 0.010)
    curve.observe(8, 0.100)  # a steep line: 22.5 ms an image
    assert curve(16) == pytest.approx(0.200)  # proportion caps the line's 0.28
    assert curve(2) == pytest.approx(0.005)  # the share of 4's time floors the line's -0.035


def test_the_lead_is_the_launch_time_of_the_batch_size_plus_a_margin() -> None:
    pace = Pace(margin_s=0.002)
    assert pace.lead(4) == 0.002
    pace.observe_launch(1, 0.004)
    pace.observe_launch(8, 0.018)
    assert pace.lead(4) == pytest.approx(0.004 + 0.014 * 3 / 7 + 0.002)
    assert pace.lead(0) == pytest.approx(0.006)
    with pytest.raises(ValueError):
        Pace(smoothing=0)


class SteadyDevice:
    """An overlapping, timed executor: every batch takes `seconds` of device time, one after another."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.free_at = 0.0
        self.log: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, slices: list[Slice]) -> list[Made]:
        return self.collect(slices, self.launch(slices))

    def launch(self, slices: list[Slice]) -> float:
        with self.lock:
            self.log.append(f"launch {[s.seeds[0] for s in slices]}")
            self.free_at = max(time.monotonic(), self.free_at) + self.seconds
            return self.free_at

    def collect(self, slices: list[Slice], done_at: float) -> list[Made]:
        time.sleep(max(0.0, done_at - time.monotonic()))
        with self.lock:
            self.log.append(f"collect {[s.seeds[0] for s in slices]}")
        return fake_execute(slices)

    def running(self, done_at: float) -> bool:
        return time.monotonic() < done_at

    def elapsed(self, launched: float) -> float:
        return self.seconds


@pytest.mark.parametrize("paced", [False, True])
def test_a_paced_worker_holds_the_next_batch_until_the_one_in_flight_is_about_to_end(paced: bool) -> None:
    """A 150 ms device: job 1 teaches the pace its device time; job 2 runs on an idle device; jobs 3 and 4
    arrive 20 and 70 ms after it. Paced, jobs 3 and 4 are launched together just before job 2 ends, so the
    device goes on without waiting for the host; launched when due, they are launched once job 2 is
    collected (nothing was due when the worker last looked, so it waited for job 2)."""
    device = SteadyDevice(0.150)

    async def scenario() -> None:
        broker = inprocess()
        worker = Worker(broker, device, max_batch_size=8, max_wait_ms=1, pace=Pace() if paced else None)
        task = asyncio.create_task(worker.run())
        await worker.ready.wait()
        try:
            first = fake_job([1])
            assert await broker.submit(first) == [fake_png(first, 1)]
            jobs = [fake_job([i]) for i in (2, 3, 4)]
            answers = []
            for delay, job in zip((0.0, 0.020, 0.050), jobs, strict=True):
                await asyncio.sleep(delay)
                answers.append(asyncio.create_task(broker.submit(job)))
            assert await asyncio.gather(*answers) == [[fake_png(j, j.seeds[0])] for j in jobs]
        finally:
            worker.stop()
            await task

    asyncio.run(scenario())
    timed = ["launch [1]", "collect [1]", "launch [2]", "launch [3, 4]", "collect [2]", "collect [3, 4]"]
    due = ["launch [1]", "collect [1]", "launch [2]", "collect [2]", "launch [3, 4]", "collect [3, 4]"]
    assert device.log == (timed if paced else due)


class Clock:
    """A `Timed` executor's answers, set by hand."""

    def __init__(self, elapsed: float, running: bool) -> None:
        self.seconds, self.busy = elapsed, running

    def running(self, launched: object) -> bool:
        return self.busy

    def elapsed(self, launched: object) -> float:
        return self.seconds


def test_a_batch_launched_onto_an_idle_device_counts_its_device_time_less_its_launch() -> None:
    """Its CUDA events span the host's gaps while it was launched: less the launch time, a lower bound,
    so that a pace never talks itself into ever later launches."""
    pace = Pace()
    pacer = Pacer(pace, Clock(elapsed=0.200, running=False))
    pacer.collected(Flight([], None, 0.0, images=8, behind=False, launch_s=0.050))
    assert pace.device_seconds(8) == pytest.approx(0.150)
    pacer.collected(Flight([], None, 0.0, images=16, behind=True, launch_s=0.050))
    assert pace.device_seconds(16) == pytest.approx(0.200)


def test_a_batch_starts_when_the_one_ahead_ends_if_that_one_still_runs_else_now() -> None:
    pace = Pace()
    pace.observe_device(4, 0.100)
    now = time.monotonic()
    ahead = Flight([], None, 0.0, images=4, ends_at=now + 0.300)
    ends, behind = Pacer(pace, Clock(0.1, running=True)).launched(0.0, 4, ahead)
    assert behind and ends == pytest.approx(now + 0.400, abs=0.01)
    ends, behind = Pacer(pace, Clock(0.1, running=False)).launched(0.0, 4, ahead)  # it ended early
    assert not behind and ends == pytest.approx(now + 0.100, abs=0.01)
    ends, behind = Pacer(pace, Clock(0.1, running=True)).launched(0.0, 4, Flight([], None, 0.0))
    assert behind and ends is None  # busy with a batch of unknown end: no prediction
    assert pace.launch(4) is not None  # every launch teaches the lead


def test_a_paced_worker_needs_an_executor_that_reports_device_time() -> None:
    with pytest.raises(ValueError, match="Timed"):
        Worker(inprocess(), fake_execute, max_batch_size=2, max_wait_ms=1, pace=Pace())
