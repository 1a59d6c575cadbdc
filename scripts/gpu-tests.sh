#!/usr/bin/env bash
# The GPU-marked tests, on a machine with CUDA and the project's dependencies importable (the GPU
# machine's own python3 with carried wheels); CI has no GPU and skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
exec "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/model "$@"  # where the GPU tests live; the service's need packages the GPU image lacks
