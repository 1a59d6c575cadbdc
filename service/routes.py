"""Thin HTTP handlers: parse, hand the request to the Intake, submit the Job, shape the answer.

Requests carrying images are checked in the thread pool, so decoding never stalls the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service import schemas
from service.errors import ApiError, ErrorResponse, validation_error
from service.images import b64encode
from service.intake import Intake
from service.jobs import Job
from service.metrics import render_metrics
from service.runtime import Runtime

M = TypeVar("M", bound=BaseModel)

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


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_intake(runtime: RuntimeDep) -> Intake:
    if runtime.intake is None:
        raise ApiError(503, "not_ready", "the model is still loading", headers={"Retry-After": "1"})
    return runtime.intake


IntakeDep = Annotated[Intake, Depends(get_intake)]
AcceptDep = Annotated[str, Header()]


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
            except ValueError:
                raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        else:
            raise ApiError(415, "unsupported_media_type", "send application/json or multipart/form-data")
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object")
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


async def answer(runtime: Runtime, job: Job, accept: str = "") -> Response:
    """Submit the job and wait; JSON with base64 PNGs, or the PNG itself for n=1 and Accept: image/png."""
    pngs = await runtime.submit(job)
    if len(pngs) == 1 and "image/png" in accept:
        return Response(pngs[0], media_type="image/png", headers={"X-Paella-Seed": str(job.seeds[0])})
    body = schemas.ImagesResponse(
        created=int(time.time()),
        data=[
            schemas.ImageDatum(b64_json=b64encode(png), seed=seed)
            for png, seed in zip(pngs, job.seeds, strict=True)
        ],
    )
    return Response(body.model_dump_json(), media_type="application/json")


def image_route(path: str, summary: str, body: type[BaseModel] | None = None) -> Callable[[Any], Any]:
    extra = both_bodies(body) if body is not None else None
    return router.post(
        path,
        response_model=schemas.ImagesResponse,
        responses={**ERRORS, **PNG_RESPONSE},
        summary=summary,
        openapi_extra=extra,
    )


@image_route("/v1/images/generations", "Images from a prompt")
async def generations(
    body: schemas.GenerationRequest, intake: IntakeDep, runtime: RuntimeDep, accept: AcceptDep = ""
) -> Response:
    return await answer(runtime, intake.generation(body), accept)


@image_route(
    "/v1/images/edits", "Inpainting: repaint an image's transparent (masked) pixels", schemas.EditRequest
)
async def edits(
    body: Annotated[schemas.EditRequest, Depends(json_or_form(schemas.EditRequest))],
    intake: IntakeDep,
    runtime: RuntimeDep,
    accept: AcceptDep = "",
) -> Response:
    return await answer(runtime, await run_in_threadpool(intake.edit, body), accept)


@image_route("/v1/images/outpaints", "Outpainting: extend an image on any side", schemas.OutpaintRequest)
async def outpaints(
    body: Annotated[schemas.OutpaintRequest, Depends(json_or_form(schemas.OutpaintRequest))],
    intake: IntakeDep,
    runtime: RuntimeDep,
    accept: AcceptDep = "",
) -> Response:
    return await answer(runtime, await run_in_threadpool(intake.outpaint, body), accept)


@image_route("/v1/images/variations", "Variations of an image", schemas.VariationRequest)
async def variations(
    body: Annotated[schemas.VariationRequest, Depends(json_or_form(schemas.VariationRequest))],
    intake: IntakeDep,
    runtime: RuntimeDep,
    accept: AcceptDep = "",
) -> Response:
    return await answer(runtime, await run_in_threadpool(intake.variations, body), accept)


@image_route(
    "/v1/images/interpolations", "Frames between two prompts or two images", schemas.InterpolationRequest
)
async def interpolations(
    body: Annotated[schemas.InterpolationRequest, Depends(json_or_form(schemas.InterpolationRequest))],
    intake: IntakeDep,
    runtime: RuntimeDep,
) -> Response:
    return await answer(runtime, await run_in_threadpool(intake.interpolation, body))


@image_route("/v1/images/compositions", "Multi-conditioning: a prompt per region, or a blend")
async def compositions(body: schemas.CompositionRequest, intake: IntakeDep, runtime: RuntimeDep) -> Response:
    return await answer(runtime, intake.composition(body))


@image_route(
    "/v1/images/structural-edits",
    "Structural editing: keep an image's layout, follow a prompt",
    schemas.StructuralEditRequest,
)
async def structural_edits(
    body: Annotated[schemas.StructuralEditRequest, Depends(json_or_form(schemas.StructuralEditRequest))],
    intake: IntakeDep,
    runtime: RuntimeDep,
    accept: AcceptDep = "",
) -> Response:
    return await answer(runtime, await run_in_threadpool(intake.structural_edit, body), accept)


@router.get("/v1/models", response_model=schemas.ModelList, responses=ERRORS)
async def models(intake: IntakeDep) -> schemas.ModelList:
    m = intake.model
    card = schemas.ModelCard(id=m.name, created=0, image_size=m.image_size, size_multiple=m.size_multiple)
    return schemas.ModelList(data=[card])


@router.get("/healthz", response_model=schemas.Health)
async def healthz() -> schemas.Health:
    """Alive: the process answers."""
    return schemas.Health(status="ok")


@router.get("/readyz", response_model=schemas.Health, responses={503: {"model": ErrorResponse}})
async def readyz(runtime: RuntimeDep) -> schemas.Health:
    """Ready: weights loaded, warmed up and the queue reachable."""
    problem = await runtime.not_ready()
    if problem:
        raise ApiError(503, "not_ready", problem, headers={"Retry-After": "1"})
    return schemas.Health(status="ready")


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(runtime: RuntimeDep) -> Response:
    await runtime.refresh_depth()
    data, content_type = render_metrics()
    return Response(data, media_type=content_type)
