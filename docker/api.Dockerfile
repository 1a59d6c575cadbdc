# The HTTP side alone (`paella api`): no torch, no model in memory, a few hundred MB. It reads the
# served model's config.json from the weight folder (mounted read-only) and queues jobs on Redis.
#   docker build -f docker/api.Dockerfile -t paella-api .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app
COPY pyproject.toml docker/requirements.py ./
RUN python requirements.py pyproject.toml torch torchvision open_clip_torch safetensors tqdm > requirements.txt \
 && pip install -r requirements.txt \
 && rm requirements.txt requirements.py

# The model's value types and folder format (no tensors), and the service.
COPY model/__init__.py model/config.py model/ops.py model/folder.py model/
COPY service service

RUN useradd --create-home --uid 10001 paella
USER paella
ENV PAELLA_HOST=0.0.0.0 \
    PAELLA_PORT=8000 \
    PAELLA_WEIGHTS=/weights/paella-mini
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "service"]
CMD ["api"]
