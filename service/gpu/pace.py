"""When to launch the next batch behind the one in flight (`PAELLA_LAUNCH_POLICY=timed`).

Launched as soon as it is due, the next batch holds only what arrived while the last one was being formed,
and whatever arrives after it waits behind two batches. Launched just before the device finishes the batch
in flight, it holds everything that arrived meanwhile and the device still never waits for the host. That
moment is the batch in flight's end, predicted from the device time of earlier batches of its size, less
the host's time to launch one. `Pace` learns both from the batches the worker finishes.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from service.gpu.flight import Flight

SMOOTHING = 0.2  # weight of a new measurement in the running means
MARGIN_S = 0.002  # launched this much earlier than the host's launch time alone asks


@runtime_checkable
class Timed(Protocol):
    """An executor that tells whether a launched batch still occupies the device, and how long a collected
    one did."""

    def running(self, launched: Any) -> bool:
        """Whether the device has work of this batch still to do (False where unknown)."""
        ...

    def elapsed(self, launched: Any) -> float | None:
        """Seconds from the batch's first work on the device to its last (None where unknown); on a device
        that was idle while the host launched it, the host's gaps are included."""
        ...


class Curve:
    """Running means of a batch's seconds per batch size, and a prediction for any size."""

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing
        self._seconds: dict[int, float] = {}

    def observe(self, images: int, seconds: float) -> None:
        """A batch's seconds."""
        if images < 1 or seconds < 0:
            return
        known = self._seconds.get(images)
        self._seconds[images] = seconds if known is None else known + self.smoothing * (seconds - known)

    def __call__(self, images: int) -> float | None:
        """Predicted seconds for a batch of `images`: measured, else interpolated between the nearest
        measured sizes, else extrapolated from the two nearest (never above proportion, never below the
        nearest's share); None before any batch was measured."""
        seen = self._seconds
        if images in seen:
            return seen[images]
        if not seen:
            return None
        sizes = sorted(seen)
        below = [s for s in sizes if s < images]
        above = [s for s in sizes if s > images]
        if below and above:
            lo, hi = below[-1], above[0]
            return seen[lo] + (seen[hi] - seen[lo]) * (images - lo) / (hi - lo)
        near = below[-1] if below else above[0]
        pair = below[-2:] if below else above[:2]
        guess = seen[near]  # one size known: the fixed cost of a batch is unknown, so no scaling
        if len(pair) == 2:
            a, b = pair
            guess += max(0.0, (seen[b] - seen[a]) / (b - a)) * (images - near)
        share = seen[near] * images / near
        return max(guess, share) if images < near else min(guess, share)


class Pace:
    """The device seconds and the host's launch seconds of a batch, per batch size, learned.

    Args:
        smoothing: weight of each new measurement.
        margin_s: added to the launch time in `lead`: a launch a little early costs a smaller batch, a
            launch a little late leaves the device idle.
    """

    def __init__(self, *, smoothing: float = SMOOTHING, margin_s: float = MARGIN_S) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        self.margin_s = margin_s
        self.device = Curve(smoothing)
        self.launch = Curve(smoothing)

    def schedule(
        self, launch_s: float, images: int, ahead: float | None, *, busy_after: bool
    ) -> float | None:
        """A batch of `images` whose launch took `launch_s` and has just returned: when it should leave the
        device (None: unpredictable). `busy_after`: the batch ahead (predicted to end at `ahead`)
        still runs, so this one starts when that one ends; else it starts now. A measured fact, not the
        prediction: a prediction checked against itself drifts (a late prediction, a late launch onto an
        idle device, a device time swollen by the host's gaps, a later prediction still)."""
        now = time.monotonic()
        self.observe_launch(images, launch_s)
        seconds = self.device_seconds(images)
        if seconds is None:
            return None
        if not busy_after:
            return now + seconds
        return None if ahead is None else max(now, ahead) + seconds

    def hold(self, ends_at: float | None, pending: int) -> float | None:
        """Seconds until a batch of `pending` images should launch behind work ending at monotonic `ends_at`;
        None: now (or unknown)."""
        if ends_at is None:
            return None
        wait = ends_at - self.lead(pending) - time.monotonic()
        return wait if wait > 0 else None

    def observe_device(self, images: int, seconds: float | None) -> None:
        """A finished batch's device seconds (None: unknown)."""
        if seconds is not None:
            self.device.observe(images, seconds)

    def observe_launch(self, images: int, seconds: float) -> None:
        """The host's seconds to launch a batch. A launch that waited for busy work counts its wait too:
        too long a lead only launches earlier, towards launching when due; too short a one idles the
        device."""
        self.launch.observe(images, seconds)

    def lead(self, images: int) -> float:
        """How long before the device's predicted end a batch of `images` is launched."""
        return (self.launch(max(1, images)) or 0.0) + self.margin_s

    def device_seconds(self, images: int) -> float | None:
        """Predicted device seconds of a batch of `images`; None before any batch was measured."""
        return self.device(images)


class Pacer:
    """A worker's timed launches: its `Pace`, and its executor's view of the device on its batches."""

    def __init__(self, pace: Pace, timer: Timed) -> None:
        self.pace = pace
        self.timer = timer

    def running(self, flight: Flight | None) -> bool:
        """Whether `flight` (the last batch launched) still occupies the device."""
        return flight is not None and self.timer.running(flight.launched)

    def hold(self, ahead: Flight, pending: int) -> float | None:
        """Seconds to go on forming a batch of `pending` images before launching it behind `ahead`."""
        return self.pace.hold(ahead.ends_at, pending)

    def launched(self, launch_s: float, images: int, ahead: Flight | None) -> tuple[float | None, bool]:
        """A batch just launched behind `ahead` (or none): when it should end, and whether all of it was
        queued while `ahead` still ran (its device time is then exact)."""
        behind = self.running(ahead)
        ends_at = ahead.ends_at if ahead is not None else None
        return self.pace.schedule(launch_s, images, ends_at, busy_after=behind), behind

    def collected(self, flight: Flight) -> None:
        """A collected batch's device time into the pace. Launched onto an idle device, its measured time
        may hold the host's gaps while launching it: less its launch time, it is a lower bound, which errs
        towards launching early, behind busy work, where the next measurement is exact."""
        seconds = self.timer.elapsed(flight.launched)
        if seconds is not None and not flight.behind:
            seconds = max(0.0, seconds - flight.launch_s)
        self.pace.observe_device(flight.images, seconds)
