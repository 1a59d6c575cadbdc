"""A batch queued on the device by `Pipeline.launch`, until `Pipeline.collect` takes its pictures."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor


@dataclasses.dataclass
class Launched:
    """A batch whose work is queued on the device (`Pipeline.launch`): its pictures, then its previews, as
    (N, H, W, 3) uint8 in host memory once `done` has passed (None: already there)."""

    pixels: Tensor
    done: torch.cuda.Event | None
    previews: list[int]  # previews per draw, in draw order
    prepare_s: float  # host seconds spent building and launching it
    rows_s: float  # of which building its rows (prompts and pictures encoded, per-row inputs)
    started: torch.cuda.Event | None = None  # recorded on the device before its first work (CUDA)

    def running(self) -> bool:
        """Whether the device has work of this batch still to do (never on a CPU)."""
        return self.done is not None and not self.done.query()

    def device_seconds(self) -> float | None:
        """Seconds the device spent on this batch, from its first work to its pictures' copy (CUDA, once
        `done` has passed); it includes gaps where the device waited for the host to launch more."""
        if self.started is None or self.done is None:
            return None
        return self.started.elapsed_time(self.done) / 1000
