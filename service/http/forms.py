"""Form fields as OpenAI's clients write them, back into JSON's shape: `image[]` parts are a list, and
`svg[model]` or `svg[reasoning][effort]` are nested objects."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

_PATH = re.compile(r"\[([^\[\]]*)\]")


def nested(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """`[(name, value), ...]` of a form as a JSON-like dict; a plain name given twice keeps the last."""
    data: dict[str, Any] = {}
    for name, value in items:
        head, _, rest = name.partition("[")
        keys = [head, *_PATH.findall("[" + rest)] if rest else [head]
        at = data
        for key, following in itertools.pairwise(keys):
            if following == "":
                at = at.setdefault(key, [])
                break
            child = at.get(key)
            if not isinstance(child, dict):
                child = at[key] = {}
            at = child
        if isinstance(at, list):
            at.append(value)
        else:
            at[keys[-1]] = value
    return data
