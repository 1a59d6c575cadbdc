#!/usr/bin/env bash
# The whole check: lint, format, types and tests (with a real Redis, headless Chromium and
# docker-compose, each installed from Debian's packages when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/ensure-redis.sh
scripts/ensure-tools.sh
export PAELLA_TEST_REDIS_URL=${PAELLA_TEST_REDIS_URL:-redis://127.0.0.1:${REDIS_PORT:-6379}/15}
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest -q "$@"
