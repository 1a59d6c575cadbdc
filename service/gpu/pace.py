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

SMOOTHING = 0.2  # weight of a new measurement in the running means
MARGIN_S = 0.002  # launched this much earlier than the host's launch time alone asks


@runtime_checkable
class Timed(Protocol):
    """An executor that tells how long a collected batch kept the device busy."""

    def elapsed(self, launched: Any) -> float | None:
        """Seconds of device work of a collected batch (not its wait behind another); None if unknown."""
        ...


class Curve:
    """Running means of a batch's seconds per batch size, and a prediction for any size."""

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing
        self._seconds: dict[int, float] = {}

    def observe(self, images: int, seconds: float, *, clean: bool = True) -> None:
        """A batch's seconds; one that is not `clean` only seeds a size not measured yet."""
        if images < 1 or seconds < 0:
            return
        known = self._seconds.get(images)
        if known is None:
            self._seconds[images] = seconds
        elif clean:
            self._seconds[images] = known + self.smoothing * (seconds - known)

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
        self, began: float, images: int, ahead: float | None, busy: bool
    ) -> tuple[float | None, bool]:
        """A batch of `images` whose launch began at monotonic `began` and has just returned, launched while
        another batch was in flight (`busy`) predicted to end at `ahead`: when it should leave the device
        (None: unpredictable), and whether it went onto busy work (then its device time is clean)."""
        now = time.monotonic()
        behind = busy and (ahead is None or began < ahead)
        if not behind:
            self.observe_launch(images, now - began)
        seconds = self.device_seconds(images)
        if seconds is None or (busy and ahead is None):
            return None, behind
        return max(now, ahead or now) + seconds, behind

    def hold(self, ends_at: float | None, pending: int) -> float | None:
        """Seconds until a batch of `pending` images should launch behind work ending at monotonic `ends_at`;
        None: now (or unknown)."""
        if ends_at is None:
            return None
        wait = ends_at - self.lead(pending) - time.monotonic()
        return wait if wait > 0 else None

    def observe_device(self, images: int, seconds: float | None, *, clean: bool = True) -> None:
        """A finished batch's device seconds (None: unknown). `clean` False: it was launched on an idle
        device, so its time may include the host's gaps while launching it; it only seeds a new size."""
        if seconds is not None:
            self.device.observe(images, seconds, clean=clean)

    def observe_launch(self, images: int, seconds: float) -> None:
        """The host's seconds to launch a batch onto an idle device (a launch behind busy work may wait
        for it, which would feed back into ever earlier launches)."""
        self.launch.observe(images, seconds)

    def lead(self, images: int) -> float:
        """How long before the device's predicted end a batch of `images` is launched."""
        return (self.launch(max(1, images)) or 0.0) + self.margin_s

    def device_seconds(self, images: int) -> float | None:
        """Predicted device seconds of a batch of `images`; None before any batch was measured."""
        return self.device(images)
