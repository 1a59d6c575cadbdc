"""Jobs and an executor for tests of the queue and the worker that need no model."""

from __future__ import annotations

import zlib

from model.config import SamplerConfig
from model.ops import Generate
from service.queue.admission import Admission
from service.queue.inprocess import InProcessBroker
from service.queue.jobs import Job, Slice


def fake_job(
    seeds: list[int],
    key: str = "k",
    *,
    timeout_s: float = 30.0,
    id: str | None = None,
    created: float | None = None,
) -> Job:
    """A generation job whose prompt is `key`; jobs of different keys never share a batch (their step
    counts differ)."""
    op = Generate(key, 32, 32)
    sampler = SamplerConfig(steps=1 + zlib.crc32(key.encode()) % 9973)
    job = Job.new(op, seeds, sampler, timeout_s, now=created)
    if id is not None:
        job.id = id
    return job


def fake_png(job: Job, seed: int) -> bytes:
    assert isinstance(job.op, Generate)
    return f"{job.op.prompt}/{seed}".encode()


def fake_execute(slices: list[Slice]) -> list[list[bytes]]:
    return [[fake_png(s.job, seed) for seed in s.seeds] for s in slices]


def inprocess(max_queue_cost: float = 1e9, max_queue_wait_s: float = 1e9) -> InProcessBroker:
    """An in-process broker whose admission lets every fake job in unless told otherwise."""
    return InProcessBroker(Admission(max_queue_cost, max_queue_wait_s))
