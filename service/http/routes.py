"""The HTTP routes: the image endpoints from one table, and models, health, readiness and metrics.

An image endpoint parses its body (JSON, or also multipart/form-data where it takes uploads), hands it
to the Intake in the thread pool (decoding uploads never stalls the event loop), submits the Job and
answers JSON with base64 PNGs, or the PNG itself for n=1 with `Accept: image/png`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service import metrics
from service.errors import ServiceError, not_ready
from service.http import schemas
from service.http.access import client_of
from service.http.errors import ErrorResponse, validation_error
from service.http.intake import Intake
from service.metrics import render_metrics
from service.queue.admission import cost
from service.queue.jobs import Job
from service.runtime import Runtime


@dataclass(frozen=True)
class ImageRoute:
    """One image endpoint: its path, body, OpenAPI summary, the Intake method that makes its Job, and
    whether it also takes multipart/form-data (the endpoints that take uploads)."""

    path: str
    body: type[BaseModel]
    summary: str
    build: Callable[[Intake, Any], Job]
    form: bool


IMAGE_ROUTES = (
    ImageRoute(
        "/v1/images/generations", schemas.GenerationRequest, "Images from a prompt", Intake.generation, False
    ),
    ImageRoute(
        "/v1/images/edits",
        schemas.EditRequest,
        "Inpainting: repaint an image's transparent (masked) pixels",
        Intake.edit,
        True,
    ),
    ImageRoute(
        "/v1/images/outpaints",
        schemas.OutpaintRequest,
        "Outpainting: extend an image on any side",
        Intake.outpaint,
        True,
    ),
    ImageRoute(
        "/v1/images/variations", schemas.VariationRequest, "Variations of an image", Intake.variations, True
    ),
    ImageRoute(
        "/v1/images/interpolations",
        schemas.InterpolationRequest,
        "Frames between two prompts or two images",
        Intake.interpolation,
        True,
    ),
    ImageRoute(
        "/v1/images/compositions",
        schemas.CompositionRequest,
        "Multi-conditioning: a prompt per region, or a blend",
        Intake.composition,
        False,
    ),
    ImageRoute(
        "/v1/images/structural-edits",
        schemas.StructuralEditRequest,
        "Structural editing: keep an image's layout, follow a prompt",
        Intake.structural_edit,
        True,
    ),
)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why}
    for status, why in [
        (400, "invalid input"),
        (413, "body or image too large"),
        (503, "queue full (with Retry-After) or not ready"),
        (504, "deadline passed"),
    ]
}
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "with n=1 and `Accept: image/png`: the PNG itself"}
}

router = APIRouter()
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
AcceptDep = Annotated[str, Header()]


def get_intake(runtime: RuntimeDep) -> Intake:
    if runtime.intake is None:
        raise not_ready("the model is still loading")
    return runtime.intake


IntakeDep = Annotated[Intake, Depends(get_intake)]


def json_or_form(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency reading `model` from a JSON body (images base64) or multipart/form-data (files)."""

    async def parse(request: Request) -> M:
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        data: Any
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            async with request.form() as form:
                data = {}
                for name, value in form.multi_items():
                    data[name] = await value.read() if isinstance(value, UploadFile) else value
        elif content_type == "application/json":
            try:
                data = await request.json()
            except (ValueError, RecursionError):
                raise ServiceError(
                    400, "invalid_json", "the body is not valid JSON, or nested too deeply"
                ) from None
        else:
            raise ServiceError(415, "unsupported_media_type", "send application/json or multipart/form-data")
        if not isinstance(data, dict):
            raise ServiceError(400, "invalid_json", "the body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise validation_error(e.errors()) from None

    return parse


def both_bodies(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body given as JSON (base64 images) or as multipart/form-data (image files)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    form = {**schema, "properties": dict(schema["properties"])}
    for name, prop in schema["properties"].items():
        if "base64" in str(prop):
            form["properties"][name] = {"type": "string", "format": "binary", "description": "image file"}
    content = {"application/json": {"schema": schema}, "multipart/form-data": {"schema": form}}
    return {"requestBody": {"required": True, "content": content}}


async def answer(request: Request, runtime: Runtime, job: Job, accept: str) -> Response:
    """Charge the client, submit the job and wait (withdrawing it if the client leaves first); JSON with
    base64 PNGs, or the PNG itself for n=1 and Accept: image/png."""
    runtime.limits.spend(client_of(request.scope), cost(job))
    pngs = await until_disconnected(request, runtime.submit(job))
    if len(pngs) == 1 and "image/png" in accept:
        return Response(pngs[0], media_type="image/png", headers={"X-Paella-Seed": str(job.seeds[0])})
    body = schemas.ImagesResponse(
        created=int(time.time()),
        data=[
            schemas.ImageDatum(b64_json=base64.b64encode(png).decode("ascii"), seed=seed)
            for png, seed in zip(pngs, job.seeds, strict=True)
        ],
    )
    return Response(body.model_dump_json(), media_type="application/json")


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; if the client disconnects first, `work` is cancelled (the queue forgets the job)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        metrics.CANCELLED.inc()
        raise ServiceError(499, "client_closed_request", "the client closed the connection")
    return task.result()


async def _disconnect(request: Request) -> None:
    """Returns once the client has gone (the body has been read by then, so only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _add_image_route(route: ImageRoute) -> None:
    """Register one endpoint of the table; JSON-only bodies are parsed (and documented) by FastAPI."""
    options: dict[str, Any] = {
        "response_model": schemas.ImagesResponse,
        "responses": {**ERRORS, **PNG_RESPONSE},
        "summary": route.summary,
        "name": route.path.rsplit("/", 1)[-1],
    }
    body_type: Any = route.body
    if route.form:
        body_type = Annotated[route.body, Depends(json_or_form(route.body))]
        options["openapi_extra"] = both_bodies(route.body)

    async def handler(
        request: Request, body: Any, intake: IntakeDep, runtime: RuntimeDep, accept: AcceptDep = ""
    ) -> Response:
        job = await run_in_threadpool(route.build, intake, body)
        return await answer(request, runtime, job, accept)

    handler.__annotations__["body"] = body_type  # the route's own body, for FastAPI's parsing and docs
    router.post(route.path, **options)(handler)


for _route in IMAGE_ROUTES:
    _add_image_route(_route)


@router.get("/v1/models", response_model=schemas.ModelList, responses=ERRORS)
async def models(intake: IntakeDep) -> schemas.ModelList:
    m = intake.model
    card = schemas.ModelCard(id=m.name, created=0, image_size=m.image_size, size_multiple=m.size_multiple)
    return schemas.ModelList(data=[card])


@router.get("/healthz", response_model=schemas.Health, responses={503: {"model": ErrorResponse}})
async def healthz(runtime: RuntimeDep) -> schemas.Health:
    """Alive: the process can serve (503 once its start-up failed or its worker hung or died: restart it)."""
    if not runtime.alive():
        raise ServiceError(503, "unhealthy", "this process cannot serve; restart it")
    return schemas.Health(status="ok")


@router.get("/readyz", response_model=schemas.Health, responses={503: {"model": ErrorResponse}})
async def readyz(runtime: RuntimeDep) -> schemas.Health:
    """Ready: weights loaded and warmed up (or, for `paella api`, a live worker) and the queue reachable."""
    problem = await runtime.not_ready()
    if problem:
        raise not_ready(problem)
    return schemas.Health(status="ready")


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def exposition(runtime: RuntimeDep) -> Response:
    await runtime.refresh_depth()
    data, content_type = render_metrics()
    return Response(data, media_type=content_type)
