"""The playground: `GET /` serves a page of plain HTML, CSS and JavaScript (`static/`, no build step,
nothing fetched from elsewhere) that calls the image endpoints from the browser."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.errors import ServiceError

STATIC = Path(__file__).with_name("static")
MEDIA_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
FILES = {file.name: file for file in STATIC.iterdir() if file.suffix in MEDIA_TYPES}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def playground() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type=MEDIA_TYPES[".html"])


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """One of the playground's files, by name; nothing else on disk is reachable."""
    file = FILES.get(name)
    if file is None:
        raise ServiceError(404, "not_found", f"no file {name!r} in the playground")
    return FileResponse(file, media_type=MEDIA_TYPES[file.suffix])
