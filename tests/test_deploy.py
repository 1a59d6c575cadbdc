"""The container stack as files: docker-compose.yml resolves for both profiles (Debian's docker-compose,
no engine needed) with the properties the deployment guide promises, the images run as a user with
health checks, and the API image's few files serve without torch."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("PAELLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ALWAYS = {"redis", "api", "gateway", "prometheus", "grafana"}
WORKERS = {"gpu": "worker", "cpu": "worker-cpu"}
MODEL_PACKAGES = ("torch", "torchvision", "open_clip", "safetensors", "tqdm")


def compose_config(profile: str, folder: Path = REPO) -> dict[str, Any]:
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is missing: scripts/test.sh installs it (scripts/ensure-tools.sh)")
    done = subprocess.run(
        ["docker-compose", "--profile", profile, "config"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PAELLA_", "COMPOSE_", "GRAFANA_"))},
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def started(config: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    """The services `--profile <profile> up` starts: those without profiles and those of the profile."""
    return {name: s for name, s in config["services"].items() if profile in s.get("profiles", [profile])}


def volumes(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """A service's mounts as target -> (source, read-only), from compose's short syntax."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        out[target] = (Path(source), mode == ["ro"])
    return out


def host_ips(service: dict[str, Any]) -> list[str]:
    """The host address of each published port (`IP:HOST:CONTAINER/PROTOCOL`)."""
    return [port.rsplit(":", 2)[0] for port in service.get("ports", [])]


def seconds(duration: str) -> float:
    return sum(
        float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in re.findall(r"([\d.]+)([hms])", duration)
    )


@pytest.mark.parametrize("profile", sorted(WORKERS), ids=lambda p: f"{p}-profile")
def test_compose_config_of_each_profile(profile: str) -> None:
    services = started(compose_config(profile), profile)
    assert set(services) == ALWAYS | {WORKERS[profile]}
    worker = services[WORKERS[profile]]
    devices = worker.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if profile == "gpu":
        assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
        assert worker["environment"]["PAELLA_DEVICE"] == "cuda"
    else:
        assert devices == [] and worker["environment"]["PAELLA_DEVICE"] == "cpu"
        assert worker["environment"]["PAELLA_WEIGHTS"] == "/weights/paella-mini"
    deadline = float(services["api"]["environment"]["PAELLA_REQUEST_TIMEOUT_S"])
    for name in ("api", "gateway", WORKERS[profile]):
        assert seconds(services[name]["stop_grace_period"]) > deadline, name
        assert worker["environment"]["PAELLA_REDIS_URL"] == services["api"]["environment"]["PAELLA_REDIS_URL"]
    for name in ("api", WORKERS[profile]):
        assert volumes(services[name])["/weights"] == (REPO / "weights", True), name
        assert services[name]["environment"]["PAELLA_WEIGHTS"].startswith("/weights/")
    published = {name: host_ips(s) for name, s in services.items() if host_ips(s)}
    assert published == {name: ["127.0.0.1"] for name in ("gateway", "prometheus", "grafana")}
    assert "ports" not in services["api"]  # replicas scale behind the gateway
    command = services["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "no"


def test_prometheus_scrapes_every_api_replica_and_worker_and_grafana_is_provisioned() -> None:
    config = compose_config("cpu")
    scrape = yaml.safe_load((REPO / "docker" / "prometheus.yml").read_text())["scrape_configs"]
    names = {n for job in scrape for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert names == {"api", *WORKERS.values()}
    grafana = config["services"]["grafana"]
    mounts = {target: source for target, (source, _) in volumes(grafana).items()}
    provider = yaml.safe_load((mounts["/etc/grafana/provisioning/dashboards"] / "paella.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    dashboard = mounts[f"{folder}/paella-serve.json"]
    assert dashboard == REPO / "docker" / "grafana-dashboard.json"
    assert json.loads(dashboard.read_text())["uid"] == "paella-serve"
    sources = yaml.safe_load((mounts["/etc/grafana/provisioning/datasources"] / "prometheus.yml").read_text())
    [source] = sources["datasources"]
    assert (
        source["type"] == "prometheus" and source["isDefault"] and source["url"] == "http://prometheus:9090"
    )


@pytest.mark.parametrize("image", ["api", "worker"])
def test_images_run_as_a_user_with_a_health_check(image: str) -> None:
    dockerfile = (REPO / "docker" / f"{image}.Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n.*CMD", dockerfile, re.MULTILINE)
    assert "COPY weights" not in dockerfile  # mounted read-only, never baked in


@pytest.mark.redis
def test_the_api_image_files_serve_without_the_model_packages(tmp_path: Path, redis_prefix: str) -> None:
    """Only what docker/api.Dockerfile copies, with torch and the other model packages unimportable:
    `paella api` answers the model card a worker published (here by hand) and the playground, and queues a
    job on Redis."""
    dockerfile = (REPO / "docker" / "api.Dockerfile").read_text()
    for line in re.findall(r"^COPY (?!pyproject)(.+)$", dockerfile, re.MULTILINE):
        *sources, target = line.split()
        for source in sources:
            destination = tmp_path / target / Path(source).name if target.endswith("/") else tmp_path / target
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, destination)
    left_out = subprocess.run(
        [sys.executable, str(REPO / "docker" / "requirements.py"), str(REPO / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {"torch>=2.4", "safetensors>=0.4"} <= set(left_out.split())  # the full list, for the worker
    script = f"""
import sys
for name in {MODEL_PACKAGES!r}:
    sys.modules[name] = None  # importing any of them now fails
import asyncio
import httpx
from model.folder import read_config
from service.app import create_app
from service.queue.redis_broker import RedisBroker
from service.settings import Settings

async def main():
    config = read_config({str(REPO / "weights" / "paella-mini")!r})
    worker = RedisBroker({REDIS_URL!r}, prefix={redis_prefix!r}, model=config.name)
    await worker.announce(config)  # what a worker does once it is warm
    await worker.close()
    settings = Settings(weights="/nowhere", redis_url={REDIS_URL!r},
                        redis_stream_prefix={redis_prefix!r}, request_timeout_s=0.3)
    app = create_app(settings, run_worker=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for _ in range(100):
                card = await client.get("/v1/models")
                if card.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            page = await client.get("/")
            queued = await client.post("/v1/images/generations", json={{"prompt": "a red circle"}})
            print(card.json()["data"][0]["id"], page.status_code, queued.status_code)

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # no worker: the job was queued and answered 504 at its deadline
    assert done.stdout.split() == ["paella-mini", "200", "504"], done.stdout + done.stderr


def test_the_guides_second_gpu_worker_joins_the_stack(tmp_path: Path) -> None:
    """docs/deployment.md's override for a second GPU: its own device, the queue, the weights, and the
    `worker` alias that Prometheus discovers."""
    guide = (REPO / "docs" / "deployment.md").read_text()
    [block] = re.findall(r"```yaml\n(.*?)```", guide, re.DOTALL)
    shutil.copy(REPO / "docker-compose.yml", tmp_path)
    (tmp_path / "docker-compose.override.yml").write_text(textwrap.dedent(block))
    (tmp_path / "weights").mkdir()
    services = started(compose_config("gpu", tmp_path), "gpu")
    first, second = services["worker"], services["worker-gpu1"]
    devices = [s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for s in (first, second)]
    assert devices == [["0"], ["1"]]
    shared = ("PAELLA_REDIS_URL", "PAELLA_WEIGHTS", "PAELLA_DEVICE")
    assert {k: first["environment"][k] for k in shared} == {k: second["environment"][k] for k in shared}
    assert second["networks"]["default"]["aliases"] == ["worker"]
    assert volumes(second)["/weights"] == (tmp_path / "weights", True)
    assert seconds(second["stop_grace_period"]) > float(first["environment"]["PAELLA_REQUEST_TIMEOUT_S"])
