"""The HTTP routes: the image endpoints from one table, the images answered as links, and models, health,
readiness and metrics.

An image endpoint parses its body (JSON, or also multipart/form-data where it takes uploads), finds the
model it names among those the workers serve, hands the body to that model's Intake in the thread pool
(decoding uploads never stalls the event loop), submits the Job and answers (`service.http.answers`):
JSON, the image itself, or, for `stream: true` where OpenAI streams, Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from model.config import ModelConfig
from service import metrics
from service.errors import ServiceError, not_ready
from service.http import answers, schemas
from service.http.access import client_of
from service.http.errors import ErrorResponse, validation_error
from service.http.forms import nested
from service.http.image_store import media_type
from service.http.intake import Intake
from service.metrics import render_metrics
from service.queue.admission import cost
from service.queue.jobs import Job
from service.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRoute:
    """One image endpoint: its path, body, OpenAPI summary, the Intake method that makes its Job, whether
    it also takes multipart/form-data (the endpoints that take uploads), and the kind of its events when
    it streams (OpenAI's `image_generation` and `image_edit`)."""

    path: str
    body: type[BaseModel]
    summary: str
    build: Callable[[Intake, Any], Job]
    form: bool
    events: str | None = None


IMAGE_ROUTES = (
    ImageRoute(
        "/v1/images/generations",
        schemas.GenerationRequest,
        "Images from a prompt",
        Intake.generation,
        False,
        "image_generation",
    ),
    ImageRoute(
        "/v1/images/edits",
        schemas.EditRequest,
        "Inpainting: repaint an image's transparent (masked) pixels",
        Intake.edit,
        True,
        "image_edit",
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
        (401, "a valid API key is needed"),
        (404, "no such model"),
        (408, "the body came too slowly"),
        (413, "body or image too large, or a request larger than the queue"),
        (429, "over the client's request or cost allowance (with Retry-After)"),
        (500, "the model or a worker failed"),
        (503, "queue full (with Retry-After) or not ready"),
        (504, "deadline passed"),
    ]
}
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {}, "text/event-stream": {}},
        "description": "JSON; with n=1 and `Accept` naming the output format's type (image/png, ...), the "
        "image itself; with `stream: true` (generations, edits), Server-Sent Events",
    }
}

router = APIRouter()
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def json_or_form(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency reading `model` from a JSON body (images base64) or multipart/form-data (files)."""

    async def parse(request: Request) -> M:
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        data: Any
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            async with request.form() as form:
                items = [
                    (name, await value.read() if isinstance(value, UploadFile) else value)
                    for name, value in form.multi_items()
                ]
            data = nested(items)
        elif content_type == "application/json":
            try:
                data = await request.json()
            except (ValueError, RecursionError):
                raise ServiceError(
                    400, "invalid_json", "the body is not JSON, or is nested too deeply"
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


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; if the client disconnects first, `work` is cancelled (the queue forgets the job,
    which is never computed) and counted in `paella_cancelled_total`."""
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
        "responses": {**ERRORS, **IMAGE_RESPONSES},
        "summary": route.summary,
        "name": route.path.rsplit("/", 1)[-1],
    }
    body_type: Any = route.body
    if route.form:
        body_type = Annotated[route.body, Depends(json_or_form(route.body))]
        options["openapi_extra"] = both_bodies(route.body)

    async def handler(body: Any, request: Request, runtime: RuntimeDep) -> Response:
        intake = Intake(await runtime.model(body.model), runtime.settings)
        job = await run_in_threadpool(route.build, intake, body)
        runtime.limits.spend(client_of(request.scope), cost(job))  # 429 past the client's allowance
        log.info("job %s: %d image(s) on %s", job.id, job.n, job.model)  # joins the request id to the job's
        if route.events is not None and body.stream:
            return answers.events(route.events, body, job, await runtime.queue().enqueue(job))
        images = await until_disconnected(request, runtime.queue().submit(job))
        assert runtime.images is not None
        return await answers.images(request, body, job, images, runtime.images, runtime.settings.public_url)

    handler.__annotations__["body"] = body_type  # the route's own body, for FastAPI's parsing and docs
    router.post(route.path, **options)(handler)


for _route in IMAGE_ROUTES:
    _add_image_route(_route)


@router.get(answers.FILES_PATH + "/{image_id}", responses={200: {"content": {"image/png": {}}}, **ERRORS})
async def image_file(image_id: str, runtime: RuntimeDep) -> Response:
    """An image answered as a URL (`response_format: "url"`), until it expires."""
    if runtime.images is None:
        raise not_ready("the service is starting")
    data = await runtime.images.get(image_id)
    if data is None:
        raise ServiceError(404, "image_not_found", "no such image: it expired, or never was", "image_id")
    return Response(data, media_type=media_type(image_id))


def _card(model: ModelConfig, max_side: int) -> schemas.ModelCard:
    sampler = model.sampler
    defaults = schemas.SamplerDefaults(
        steps=sampler.steps,
        guidance_scale=sampler.guidance_scale,
        temperature=sampler.temp_range[0],
        typical_mass=sampler.mass,
    )
    return schemas.ModelCard(
        id=model.name,
        created=0,
        image_size=model.image_size,
        size_multiple=model.size_multiple,
        max_side=max_side,
        sampler=defaults,
    )


@router.get("/v1/models", response_model=schemas.ModelList, responses=ERRORS)
async def models(runtime: RuntimeDep) -> schemas.ModelList:
    """The models the live workers serve, with their size rules and sampler defaults."""
    served = await runtime.queue().models()
    return schemas.ModelList(data=[_card(m, runtime.settings.max_side) for m in served])


@router.get("/v1/models/{model_id}", response_model=schemas.ModelCard, responses=ERRORS)
async def model(model_id: str, runtime: RuntimeDep) -> schemas.ModelCard:
    return _card(await runtime.model(model_id), runtime.settings.max_side)


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
