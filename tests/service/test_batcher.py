"""The batching policy with a fake clock: triggers, keys, splitting, deadlines, fairness."""

from __future__ import annotations

from model.config import SamplerConfig
from model.ops import Composition, Generate, Outpaint, Picture, Region, StructuralEdit, Variation
from service.gpu.batcher import Batcher
from service.queue.jobs import Job
from tests.service.fakes import fake_job

T0 = 1000.0


def job(name: str, n: int = 1, key: str = "a", created: float = T0, timeout_s: float = 60.0) -> Job:
    return fake_job(list(range(n)), key, timeout_s=timeout_s, id=name, created=created)


def spans(batch: list) -> list[tuple[str, int, int]]:
    return [(s.job.id, s.start, s.stop) for s in batch]


def test_size_trigger_sends_a_full_batch_at_once() -> None:
    b = Batcher(max_batch_size=4, max_wait_ms=50)
    b.add(job("x", 2))
    assert b.next_batch(T0) == []
    b.add(job("y", 2))
    assert spans(b.next_batch(T0)) == [("x", 0, 2), ("y", 0, 2)]
    assert len(b) == 0 and b.next_wakeup(T0) is None


def test_wait_trigger_sends_a_partial_batch_after_max_wait() -> None:
    b = Batcher(max_batch_size=8, max_wait_ms=50)
    b.add(job("x", 3))
    assert b.next_wakeup(T0) == T0 + 0.05
    assert b.next_batch(T0 + 0.049) == []
    assert spans(b.next_batch(T0 + 0.05)) == [("x", 0, 3)]


def test_only_equal_keys_share_a_batch() -> None:
    b = Batcher(max_batch_size=4, max_wait_ms=50)
    b.add(job("x", 1, key="512x512"))
    b.add(job("y", 1, key="256x256"))
    b.add(job("z", 1, key="512x512"))
    assert spans(b.next_batch(T0 + 1)) == [("x", 0, 1), ("z", 0, 1)]
    assert spans(b.next_batch(T0 + 1)) == [("y", 0, 1)]


def test_a_request_splits_across_batches_and_its_rest_goes_next() -> None:
    b = Batcher(max_batch_size=4, max_wait_ms=50)
    b.add(job("x", 3))
    b.add(job("y", 3, created=T0 + 0.01))
    assert spans(b.next_batch(T0)) == [("x", 0, 3), ("y", 0, 1)]
    # y's rest has less than a batch but y has already waited its turn: due once its wait is over
    assert b.pending_images == 2
    assert spans(b.next_batch(T0 + 0.06)) == [("y", 1, 3)]


def test_redelivered_job_resumes_at_start() -> None:
    b = Batcher(max_batch_size=8, max_wait_ms=0)
    b.add(job("x", 4), start=3)
    b.add(job("done", 2), start=2)
    assert spans(b.next_batch(T0)) == [("x", 3, 4)]
    assert len(b) == 0


def test_expired_jobs_are_dropped_and_returned() -> None:
    b = Batcher(max_batch_size=8, max_wait_ms=1000)
    b.add(job("short", 2, timeout_s=0.1))
    b.add(job("long", 2, timeout_s=10))
    assert b.next_wakeup(T0) == T0 + 0.1
    assert [j.id for j in b.expire(T0 + 0.1)] == ["short"]
    assert b.expire(T0 + 0.1) == []
    assert spans(b.next_batch(T0 + 1)) == [("long", 0, 2)]


def test_oldest_key_goes_first_so_a_busy_key_cannot_starve_a_quiet_one() -> None:
    b = Batcher(max_batch_size=2, max_wait_ms=10)
    b.add(job("quiet", 1, key="b", created=T0))
    for i in range(6):
        b.add(job(f"busy{i}", 1, key="a", created=T0 + 0.001 * (i + 1)))
    order = [spans(b.next_batch(T0 + 1)) for _ in range(4)]
    assert order == [
        [("quiet", 0, 1)],
        [("busy0", 0, 1), ("busy1", 0, 1)],
        [("busy2", 0, 1), ("busy3", 0, 1)],
        [("busy4", 0, 1), ("busy5", 0, 1)],
    ]


def test_oldest_first_within_a_key_even_when_delivered_late() -> None:
    b = Batcher(max_batch_size=2, max_wait_ms=10)
    b.add(job("new", 1, created=T0 + 5))
    b.add(job("reclaimed", 1, created=T0))
    b.add(job("newer", 1, created=T0 + 6))
    assert spans(b.next_batch(T0 + 6)) == [("reclaimed", 0, 1), ("new", 0, 1)]


def test_discard_and_drain() -> None:
    b = Batcher(max_batch_size=2, max_wait_ms=10)
    b.add(job("x", 3))
    b.next_batch(T0)
    b.discard("x")
    assert len(b) == 0
    b.add(job("y", 1, created=T0 + 1))
    b.add(job("z", 1, key="k", created=T0))
    assert [j.id for j in b.drain()] == ["z", "y"]
    assert b.next_wakeup(T0) is None


def test_job_keys_part_canvases_steps_region_maps_and_variations() -> None:
    picture = Picture(bytes(32 * 32 * 3), 32, 32)
    ops = {
        "generate": Generate("a red circle", 32, 32),
        "outpaint": Outpaint(Picture(bytes(16 * 32 * 3), 16, 32), "a blue square", right=16),
        "structural": StructuralEdit(picture, "a blue square", 0.5),
        "variation": Variation(picture, 32, 32),
        "composition": Composition((Region("a red circle"),), 32, 32),
        "wider": Generate("a red circle", 64, 32),
    }
    jobs = {name: Job.new(op, [1], SamplerConfig(steps=4), 60, model="m") for name, op in ops.items()}
    keys = {name: job.key() for name, job in jobs.items()}
    assert keys["generate"] == keys["outpaint"] == keys["structural"]
    assert len({keys["generate"], keys["variation"], keys["composition"], keys["wider"]}) == 4
    assert Job.new(ops["generate"], [1], SamplerConfig(steps=5), 60, model="m").key() != keys["generate"]
    shared = {name: job.key(variations_apart=False) for name, job in jobs.items()}  # no image denoiser
    assert shared["variation"] == shared["generate"] != shared["composition"]


def test_without_an_image_denoiser_variations_share_batches_with_generations() -> None:
    picture = Picture(bytes(32 * 32 * 3), 32, 32)
    made = [
        Job.new(Generate("a red circle", 32, 32), [1], SamplerConfig(steps=4), 60, T0, model="m"),
        Job.new(Variation(picture, 32, 32), [2], SamplerConfig(steps=4), 60, T0 + 0.001, model="m"),
    ]
    for apart, batches in ((True, 2), (False, 1)):
        b = Batcher(max_batch_size=8, max_wait_ms=10, variations_apart=apart)
        for job in made:
            b.add(job)
        formed = []
        while batch := b.next_batch(T0 + 1):
            formed.append([s.job.id for s in batch])
        assert len(formed) == batches
        assert sorted(i for batch in formed for i in batch) == sorted(j.id for j in made)
