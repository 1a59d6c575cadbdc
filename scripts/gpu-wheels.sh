#!/usr/bin/env bash
# Here, before a GPU run: the service's packages that the GPU machine's image lacks, as wheels for its
# Python 3.12 (x86-64), into .wheels/ (ignored by git; name it in the device call's `carry`). The image has
# torch, numpy, pillow, safetensors, httpx and prometheus-client; py-spy is for profiling the service there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux1_x86_64 manylinux_2_5_x86_64; do
    platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .wheels \
    fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 pydantic==2.14.4 pydantic-core==2.50.5 \
    pydantic-settings==2.16.3 python-dotenv==1.2.4 python-multipart==0.0.34 redis==8.2.0 \
    typing-inspection==0.4.5 typing-extensions==4.16.0 annotated-types==0.8.0 annotated-doc==0.0.7 \
    opentelemetry-api==1.45.3 importlib-metadata==10.2.0 zipp==4.1.2 open-clip-torch==3.3.0 ftfy==6.3.1 \
    wcwidth==0.9.5 py-spy==0.4.3
du -sh .wheels
