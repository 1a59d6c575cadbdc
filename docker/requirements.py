"""Print the dependencies in a pyproject.toml, one a line, leaving out the names given:
`python requirements.py pyproject.toml torch torchvision` (the images install from this, so the list
lives in one place)."""

import re
import sys
import tomllib
from pathlib import Path

pyproject = tomllib.loads(Path(sys.argv[1]).read_text())
left_out = {name.lower() for name in sys.argv[2:]}
for requirement in pyproject["project"]["dependencies"]:
    if re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower() not in left_out:
        print(requirement)
