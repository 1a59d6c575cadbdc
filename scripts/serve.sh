#!/usr/bin/env bash
# Start the service on the embedded default (in-process queue, the shipped paella-mini weights).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/paella serve "$@"
