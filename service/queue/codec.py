"""Jobs as bytes for Redis and back: the operation's fields as JSON, pictures as PNG, masks as bits."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from typing import Any

import numpy as np
from PIL import Image

from model.config import SamplerConfig
from model.ops import OPERATIONS, Mask, Operation, Picture, Region
from service.queue.jobs import Encoding, Job

_OPERATIONS = {cls.__name__: cls for cls in OPERATIONS}


def encode_job(job: Job) -> bytes:
    """The job as compact JSON bytes."""
    op = {"type": type(job.op).__name__} | {
        f.name: _encode(getattr(job.op, f.name)) for f in dataclasses.fields(job.op)
    }
    body = {
        "id": job.id,
        "op": op,
        "seeds": job.seeds,
        "sampler": dataclasses.asdict(job.sampler),
        "model": job.model,
        "deadline": job.deadline,
        "created": job.created,
        "previews": job.previews,
        "encoding": dataclasses.asdict(job.encoding),
        "reply_to": job.reply_to,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_job(data: bytes | str) -> Job:
    """A job from `encode_job`'s bytes."""
    d = json.loads(data)
    fields = dict(d["op"])
    op: Operation = _OPERATIONS[fields.pop("type")](**{k: _decode(v) for k, v in fields.items()})
    sampler = SamplerConfig.from_dict(d["sampler"])
    seeds = [int(s) for s in d["seeds"]]
    return Job(
        d["id"],
        op,
        seeds,
        sampler,
        d["model"],
        float(d["deadline"]),
        float(d["created"]),
        int(d["previews"]),
        Encoding(**d["encoding"]),
        d.get("reply_to", ""),
    )


def picture_to_png(picture: Picture, compress_level: int = 1) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture.array(), "RGB").save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _encode(value: Any) -> Any:
    if isinstance(value, Picture):
        return {"$picture": base64.b64encode(picture_to_png(value)).decode()}
    if isinstance(value, Mask):
        return {"$mask": [base64.b64encode(value.bits).decode(), value.width, value.height]}
    if isinstance(value, Region):
        return {"$region": [value.prompt, value.box and list(value.box), value.weight]}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if not isinstance(value, dict):
        return value
    if "$picture" in value:
        png = Image.open(io.BytesIO(base64.b64decode(value["$picture"])))
        return Picture.from_array(np.asarray(png.convert("RGB")))
    if "$mask" in value:
        bits, width, height = value["$mask"]
        return Mask(base64.b64decode(bits), int(width), int(height))
    prompt, box, weight = value["$region"]
    return Region(prompt, None if box is None else tuple(box), weight)
