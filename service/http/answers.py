"""How a job's images go back to the client: OpenAI's JSON with base64 images or links to the image store,
the image itself for one image asked with `Accept`, or Server-Sent Events of previews and images."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal, get_args

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from service.errors import ServiceError
from service.http import schemas
from service.http.errors import count_rejection, error_body
from service.http.image_store import ImageStore
from service.queue.broker import Event, Preview
from service.queue.jobs import Job

FILES_PATH = "/v1/images/files"
NamedQuality = Literal["low", "medium", "high", "xhigh", "max"]
# OpenAI's qualities an answer can name (the others only choose a step count).
_NAMED: tuple[NamedQuality, ...] = get_args(NamedQuality)


def _quality(body: schemas.ImageOptions) -> NamedQuality | None:
    return next((q for q in _NAMED if q == body.quality), None)


def _size(job: Job) -> str:
    width, height = job.op.size
    return f"{width}x{height}"


def _safety_identifier(body: schemas.ImageOptions) -> str | None:
    return body.safety_identifier or body.user or None


async def images(
    request: Request,
    body: schemas.ImageOptions,
    job: Job,
    data: list[bytes],
    store: ImageStore,
    base: str | None,
) -> Response:
    """JSON with each image as base64 or, for `response_format: "url"`, as a link to the image store;
    for one image asked as its media type (`Accept: image/png`, ...), the image itself."""
    encoding = job.encoding
    if len(data) == 1 and encoding.media_type in request.headers.get("accept", ""):
        return Response(data[0], media_type=encoding.media_type, headers={"X-Paella-Seed": str(job.seeds[0])})
    items = []
    for image, seed in zip(data, job.seeds, strict=True):
        if body.response_format == "url":
            image_id = await store.put(image, encoding.format)
            root = (base or str(request.base_url)).rstrip("/")
            items.append(schemas.ImageDatum(url=f"{root}{FILES_PATH}/{image_id}", seed=seed))
        else:
            items.append(schemas.ImageDatum(b64_json=base64.b64encode(image).decode("ascii"), seed=seed))
    answer = schemas.ImagesResponse(
        created=int(time.time()),
        data=items,
        output_format=encoding.format,
        size=_size(job),
        quality=_quality(body),
        safety_identifier=_safety_identifier(body),
    )
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")


def events(
    kind: str, body: schemas.ImageOptions, job: Job, answer: AsyncIterator[Event]
) -> StreamingResponse:
    """Server-Sent Events in OpenAI's shape: `{kind}.partial_image` for each preview, `{kind}.completed` for
    each image (with its `index` in the request and its `seed` beside OpenAI's fields); an error after the
    stream has begun is an `error` event with the one error body."""
    common: dict[str, Any] = {
        "background": "opaque",
        "output_format": job.encoding.format,
        "quality": _quality(body) or "auto",
        "size": _size(job),
    }
    usage = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}
    usage |= {"output_tokens": 0, "total_tokens": 0}

    async def stream() -> AsyncIterator[str]:
        try:
            async for event in answer:
                fields = {
                    "b64_json": base64.b64encode(event.data).decode("ascii"),
                    "created_at": int(time.time()),
                    "index": event.index,
                    "seed": job.seeds[event.index],
                    **common,
                }
                if isinstance(event, Preview):
                    yield _event(f"{kind}.partial_image", {**fields, "partial_image_index": event.number})
                else:
                    identifier = _safety_identifier(body)
                    extra = {"usage": usage} | ({"safety_identifier": identifier} if identifier else {})
                    yield _event(f"{kind}.completed", {**fields, **extra})
        except ServiceError as e:
            count_rejection(e)
            yield f"event: error\ndata: {json.dumps(error_body(e))}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _event(kind: str, fields: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n"
