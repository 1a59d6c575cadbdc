# The GPU side (`paella worker`): torch on a CUDA base image; it loads the weights (mounted read-only),
# warms up every batch size before it takes work, and reports healthy only then.
#   docker build -f docker/worker.Dockerfile -t paella-worker .
#   docker build -f docker/worker.Dockerfile --build-arg BASE_IMAGE=ubuntu:24.04 -t paella-worker-cpu .
# PyPI's torch wheel carries its own CUDA libraries: the base image brings the container toolkit's
# settings, and the host's driver must support the wheel's CUDA version. TORCH_INDEX_URL picks another
# wheel index (a CPU-only one makes a much smaller CPU image).
ARG BASE_IMAGE=nvidia/cuda:13.0.1-base-ubuntu24.04
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

# Dependencies first, so that code changes do not reinstall torch.
RUN if [ -n "$TORCH_INDEX_URL" ]; then extra="--index-url $TORCH_INDEX_URL"; else extra=""; fi \
 && pip install $extra "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
WORKDIR /app
COPY pyproject.toml docker/requirements.py ./
RUN python requirements.py pyproject.toml torch torchvision > requirements.txt \
 && pip install -r requirements.txt \
 && rm requirements.txt requirements.py

COPY model model
COPY service service

RUN useradd --create-home --uid 10001 paella && mkdir -p /cache && chown paella:paella /cache
USER paella
# Compiled kernels go to /cache (a volume in the compose stack), so a restart skips most compilation.
ENV PAELLA_HOST=0.0.0.0 \
    PAELLA_METRICS_PORT=9100 \
    PAELLA_WEIGHTS=/weights/paella-mini \
    TORCHINDUCTOR_CACHE_DIR=/cache/inductor \
    TRITON_CACHE_DIR=/cache/triton
EXPOSE 9100
# Healthy once warmed up (its metrics say paella_worker_up 1) and while no batch hangs (/healthz answers 200).
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9100/healthz', timeout=2); assert b'paella_worker_up 1.0' in u.urlopen('http://127.0.0.1:9100/metrics', timeout=2).read()"]
ENTRYPOINT ["python", "-m", "service"]
CMD ["worker"]
