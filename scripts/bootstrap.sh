#!/usr/bin/env bash
# Create or refresh .venv with the project and its dev tools; idempotent and quick when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# Pin torch first so the project's `torch>=` range never pulls a different multi-GB build.
case "$(uname -m)" in
    aarch64) torch_pins="torch==2.9.1 torchvision==0.24.1" ;;
    *) torch_pins="torch==2.14.1 torchvision==0.29.1" ;;
esac
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || .venv/bin/pip install -q $torch_pins
.venv/bin/pip install -q -e '.[dev]'
touch "$stamp"
