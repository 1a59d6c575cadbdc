"""Every setting of the service, read from `PAELLA_*` environment variables in this one place."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = REPO_ROOT / "weights" / "paella-mini"


class Settings(BaseSettings):
    """The service's configuration; `paella serve`, `paella api` and `paella worker` all read it."""

    model_config = SettingsConfigDict(env_prefix="PAELLA_", extra="ignore", frozen=True)

    weights: Path = Field(
        default=DEFAULT_WEIGHTS, description="weight folder of the model to serve (`paella api` reads none)"
    )
    default_model: str | None = Field(
        default=None, description="the model of requests that name none; unset = the first model listed"
    )
    device: str = Field(
        default="auto", description="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="weights' dtype on the device: auto = float16 on CUDA, float32 on a CPU"
    )
    fast_path: bool = Field(
        default=True,
        description="on CUDA: the fused sampling kernel and CUDA graphs per batch size (Pipeline.accelerate)",
    )
    compile: bool = Field(
        default=True, description="on the fast path: torch.compile the denoiser and the VQGAN decoder"
    )
    max_batch_size: int = Field(default=8, ge=1, le=256, description="most images in one GPU batch")
    encoders: int = Field(
        default=4, ge=1, le=64, description="threads encoding PNGs while the GPU runs the next batch"
    )
    batches_in_flight: int | None = Field(
        default=None,
        ge=1,
        le=2,
        description="batches the worker keeps launched: 2 hides the host's preparation of the next batch "
        "behind the device's work, 1 answers each batch before the next is formed; unset: 2 on CUDA, 1 on "
        "a CPU (where launching a batch computes it)",
    )
    launch_policy: Literal["due", "timed"] = Field(
        default="due",
        description="with two batches in flight, when the second is launched: due = as soon as it is due "
        "(full, or its oldest request waited max_wait_ms); timed = just before the batch in flight is "
        "predicted to end (device times learned from earlier batches), so that it takes in what arrives "
        "meanwhile and no request waits behind two batches",
    )
    gc_freeze: bool = Field(
        default=True,
        description="once warm, exempt the start-up's objects (model, libraries, app) from garbage "
        "collection, so that a full collection does not stall every thread for hundreds of ms",
    )
    hang_timeout_s: float = Field(
        default=120.0, gt=0, description="a batch running longer marks the worker hung: liveness fails"
    )
    max_wait_ms: float = Field(
        default=2.0, ge=0, description="longest a batch waits for more work after its first job"
    )
    max_queue_cost: float = Field(
        default=256.0,
        gt=0,
        description="most work admitted and not answered, in units of one 256x256 picture at 8 steps; "
        "a request costing more is refused with 413",
    )
    max_queue_wait_s: float = Field(
        default=5.0,
        gt=0,
        description="admit only what the workers' measured rate finishes within this; the rest get 503 "
        "with the Retry-After that rate predicts",
    )
    request_timeout_s: float = Field(
        default=60.0, gt=0, description="deadline of every request; past it, 504"
    )
    retry_after_s: int = Field(
        default=1, ge=0, description="Retry-After seconds of a 503 before any rate is measured"
    )
    redis_url: str | None = Field(default=None, description="Redis URL; unset = embedded in-process queue")
    redis_stream_prefix: str = Field(default="paella", min_length=1, description="prefix of every Redis key")
    claim_idle_ms: int = Field(
        default=5_000,
        ge=100,
        description="a worker's lease on its Redis entries: entries it stops renewing (dead, hung, or past "
        "their deadline) are reclaimed this long after",
    )
    max_deliveries: int = Field(
        default=3, ge=1, description="deliveries before an entry goes to the dead letters"
    )
    result_ttl_s: int = Field(default=300, ge=1, description="lifetime of stored results in Redis")
    api_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated API keys; when set, /v1/* and /metrics need Authorization: Bearer <key>",
    )
    rate_limit_per_min: float | None = Field(
        default=None, gt=0, description="image requests a client (key, or address) may send a minute"
    )
    cost_limit_per_min: float | None = Field(
        default=None,
        gt=0,
        description="cost units (256x256 pictures at 8 steps) a client may ask for a minute",
    )
    cors_origins: str = Field(
        default="", description="comma-separated origins allowed to call the API from a browser (* = any)"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="longest a request body may take to arrive (408 after)"
    )
    image_ttl_s: int = Field(
        default=3600, ge=1, description="how long an image answered as a URL (response_format url) lives"
    )
    image_store_bytes: int = Field(
        default=256 * 2**20,
        ge=2**20,
        description="most bytes of URL images kept (in this process, or in Redis); the oldest go first",
    )
    public_url: str | None = Field(
        default=None,
        description="base of image URLs (e.g. https://images.example.com); unset = the request's own",
    )
    max_body_bytes: int = Field(
        default=20 * 2**20, ge=1024, description="largest request body accepted (413 above)"
    )
    max_image_pixels: int = Field(
        default=2048 * 2048, ge=1, description="largest uploaded image, width * height"
    )
    max_side: int = Field(default=1024, ge=8, description="largest output width or height, in pixels")
    max_n: int = Field(default=8, ge=1, le=8, description="most images per request (n)")
    max_frames: int = Field(default=16, ge=2, le=16, description="most frames per interpolation")
    drain_s: float = Field(
        default=3.0, ge=0, description="on SIGTERM, seconds /readyz answers 503 while requests still run"
    )
    keep_alive_s: float = Field(
        default=75.0,
        gt=0,
        description="seconds an idle HTTP connection stays open: longer than clients and load balancers "
        "keep theirs (httpx 5 s, typical balancers 60 s), so the server never closes one as a request comes",
    )
    host: str = Field(default="127.0.0.1", description="address the HTTP server binds")
    port: int = Field(default=8000, ge=0, le=65535, description="port the HTTP server binds")
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of `paella worker`'s /metrics on host; 0 = off; unset = 9100, or 9100 + N for "
        "device cuda:N (one worker per GPU on a host, no collisions)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="log level"
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="log lines: text for a terminal, json (one object a line) for a log pipeline",
    )

    def keys(self) -> list[str]:
        """The API keys, none when unset."""
        if self.api_keys is None:
            return []
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]

    def origins(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def worker_metrics_port(self) -> int:
        """`metrics_port`, with unset resolved: 9100 + N for `cuda:N`, else 9100."""
        if self.metrics_port is not None:
            return self.metrics_port
        kind, _, index = self.device.partition(":")
        return 9100 + int(index) if kind == "cuda" and index.isdigit() else 9100

    def torch_device(self) -> str:
        """The device to load the model on, with `auto` resolved."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def torch_dtype(self) -> str:
        """The weights' dtype, with `auto` resolved for the device."""
        if self.dtype != "auto":
            return self.dtype
        return "float16" if self.torch_device().startswith("cuda") else "float32"


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return f"PAELLA_{field.upper()}"
