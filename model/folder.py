"""The weight folder format, checked without loading any tensor (so the HTTP side can read a config).

A folder holds config.json, one safetensors file per network (`PARTS`, and any of `OPTIONAL_PARTS`),
optional extra files (a word list, a model card) and manifest.json with the sha256 of every other file,
checked on every read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from model.config import ModelConfig

PARTS = ("denoiser", "vqgan", "clip")
# The denoiser fine-tuned on CLIP image embeddings (v1's `model_50000_img.pt`): where a folder has it,
# variations run on it; it shares the text denoiser's architecture and config.
OPTIONAL_PARTS = ("image_denoiser",)
CONFIG = "config.json"
MANIFEST = "manifest.json"


def part_file(part: str) -> str:
    return f"{part}.safetensors"


def read_config(path: str | Path) -> ModelConfig:
    """The folder's config, after checking config.json against the manifest."""
    path = Path(path)
    verify(path, [CONFIG])
    return ModelConfig.from_dict(json.loads((path / CONFIG).read_text()))


def parts_in(path: str | Path) -> tuple[str, ...]:
    """The networks a folder holds, by its manifest: every one of `PARTS` and those of `OPTIONAL_PARTS`."""
    manifest = _manifest(Path(path))
    return (*PARTS, *(p for p in OPTIONAL_PARTS if part_file(p) in manifest))


def read_extra(path: str | Path, name: str) -> bytes:
    """The bytes of an extra file of a weight folder, checked against the manifest."""
    path = Path(path)
    verify(path, [name])
    return (path / name).read_bytes()


def verify(path: Path, names: Iterable[str] | None = None) -> None:
    """Check files' sha256 against the manifest: `names`, or every file it lists."""
    manifest = _manifest(path)
    for name in manifest if names is None else names:
        if name not in manifest:
            raise ValueError(f"{path / name}: not listed in {MANIFEST}")
        file = path / name
        if not file.is_file():
            raise ValueError(f"{file}: listed in {MANIFEST} but missing")
        if sha256(file) != manifest[name]:
            raise ValueError(f"{file}: sha256 does not match {MANIFEST}; the file is damaged or was changed")


def write_manifest(path: Path, names: Iterable[str]) -> None:
    """Record the sha256 of `names` (files already written in `path`)."""
    manifest = {"files": {name: sha256(path / name) for name in names}}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def check_extra_names(names: Iterable[str]) -> None:
    """Extra files are plain names that do not overwrite a file the format owns."""
    owned = {CONFIG, MANIFEST, *(part_file(p) for p in (*PARTS, *OPTIONAL_PARTS))}
    for name in names:
        _check_name(name)
        if name in owned:
            raise ValueError(f"extra file {name!r} would overwrite a file the folder format owns")


def sha256(file: Path) -> str:
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_name(name: str) -> None:
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a plain file name")


def _manifest(path: Path) -> Mapping[str, str]:
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except FileNotFoundError as e:
        raise ValueError(f"{path / MANIFEST}: missing; not a weight folder") from e
    for name in files:
        _check_name(name)
    return dict(files)
