"""Every operation through the Redis codec and back, value for value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.config import SamplerConfig
from model.ops import (
    OPERATIONS,
    Composition,
    Generate,
    Inpaint,
    Interpolation,
    Mask,
    Operation,
    Outpaint,
    Picture,
    Region,
    StructuralEdit,
    Variation,
)
from service.queue.codec import decode_job, encode_job
from service.queue.jobs import Encoding, Job

rng = np.random.default_rng(0)
PICTURE = Picture.from_array(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
MASK = Mask.from_array(rng.random((24, 40)) < 0.3)

EXAMPLES: list[Operation] = [
    Generate("a red circle", 64, 32),
    Generate("a red circle", 64, 32, negative_prompt="a blue square"),
    Inpaint(PICTURE, MASK, "a green triangle"),
    Outpaint(PICTURE, "more", left=8, down=16),
    Variation(PICTURE, 32, 32),
    Interpolation("a red circle", PICTURE, 5, 32, 32, mode="lerp"),
    Composition((Region("a", (0.0, 0.0, 0.5, 1.0)), Region("b", None, 2.5)), 64, 32),
    StructuralEdit(PICTURE, "a blue square", 0.25),
]


def test_the_examples_cover_every_operation() -> None:
    assert {type(op) for op in EXAMPLES} == set(OPERATIONS)


@pytest.mark.parametrize("op", EXAMPLES, ids=lambda op: type(op).__name__)
def test_an_operation_round_trips_exactly(op: Operation) -> None:
    sampler = SamplerConfig(steps=5, temp_range=(1.5, 0.5), guidance_scale=3.0, renoise_mode="prev")
    encoding = Encoding("webp", 80)
    job = Job.new(
        op, [7, 8, 2**31 - 1], sampler, timeout_s=30, model="paella-v1", previews=2, encoding=encoding
    )
    data = encode_job(job)
    json.loads(data)  # plain JSON: pictures as PNG, masks as packed bits, both base64
    again = decode_job(data)
    assert again == job
    assert again.key() == job.key()
