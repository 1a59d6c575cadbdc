"""A batch between its launch and its answers, and the checks the worker applies to any batch's results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.queue.jobs import Job, Made, Slice


@dataclass
class Flight:
    """A batch launched and not yet finished."""

    batch: list[Slice]
    launched: Any  # the executor's handle (None for executors that do not overlap)
    start: float  # the worker clock when it was launched
    images: int = 0
    ends_at: float | None = None  # paced workers: monotonic time its device work should end
    behind: bool = False  # the batch ahead still ran when its launch returned: its device time is exact
    launch_s: float = 0.0  # the host's seconds to launch it


def check_results(batch: list[Slice], results: list[Made]) -> None:
    """Raise ValueError unless `results` hold one entry per slice, with its images and previews."""
    if len(results) != len(batch) or any(
        len(made.pictures) != p.n or len(made.previews) != p.n for made, p in zip(results, batch, strict=True)
    ):
        raise ValueError("the executor returned the wrong number of images")


def unique_jobs(batch: list[Slice]) -> list[Job]:
    return list({part.job.id: part.job for part in batch}.values())
