"""Copies from the host to the device that never wait for the device.

A copy from pageable host memory synchronises with the stream first, so it waits for every batch already
queued there: with two batches in flight the second one's preparation would stall until the first had
finished (measured on the H200: 254 ms of a 275 ms batch spent in preparation, 0.3 ms waiting afterwards).
Through pinned memory the copy is queued like a kernel; PyTorch's pinned allocator keeps the buffer until
the copy has run.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """`t`, a host tensor, on `device`; to CUDA without blocking the host or waiting for queued work."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
