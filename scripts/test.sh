#!/usr/bin/env bash
# The whole check: lint, format, types and tests (with a real Redis).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/ensure-redis.sh
export PAELLA_TEST_REDIS_URL=${PAELLA_TEST_REDIS_URL:-redis://127.0.0.1:${REDIS_PORT:-6379}/15}
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest -q "$@"
