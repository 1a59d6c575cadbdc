"""The documentation stays true to the repository: every link and picture exists, every setting is
documented, and the playground's screenshot is a picture."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from service.settings import Settings, env_name

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_local_link_and_picture_exists(page: Path) -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [t for t in targets if "://" not in t]
    assert all((page.parent / t).exists() for t in local), [
        t for t in local if not (page.parent / t).exists()
    ]


def test_every_benchmark_input_named_in_a_command_exists() -> None:
    """A command's --curve is the recorded run a reader reruns it on: that file is in the repository."""
    text = (REPO / "benchmarks" / "README.md").read_text()
    inputs = re.findall(r"--curve\s+(\S+)", text)
    assert len(inputs) >= 3
    assert [p for p in inputs if not (REPO / p).is_file()] == []


def test_every_setting_is_documented() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    missing = [env_name(name) for name in Settings.model_fields if f"`{env_name(name)}`" not in text]
    assert missing == []


@pytest.mark.parametrize("picture", ["playground.png", "samples.png"])
def test_the_readme_pictures_are_pictures(picture: str) -> None:
    assert f"(docs/{picture})" in (REPO / "README.md").read_text()
    with Image.open(REPO / "docs" / picture) as image:
        assert image.format == "PNG" and min(image.size) >= 600
