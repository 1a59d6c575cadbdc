"""The metrics' names, types and buckets (the dashboard's contract), and multiprocess mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service.metrics import install_gpu_memory_gauge, render_metrics

REPO = Path(__file__).resolve().parents[2]

CONTRACT = {
    "paella_requests": "counter",
    "paella_request_duration_seconds": "histogram",
    "paella_queue_wait_seconds": "histogram",
    "paella_batch_compute_seconds": "histogram",
    "paella_batch_size": "histogram",
    "paella_images_generated": "counter",
    "paella_queue_depth": "gauge",
    "paella_rejected": "counter",
    "paella_redeliveries": "counter",
    "paella_dead_letters": "counter",
    "paella_worker_up": "gauge",
}


def test_every_contract_metric_is_exposed_with_its_type() -> None:
    body, content_type = render_metrics()
    assert content_type.startswith("text/plain")
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    for name, kind in CONTRACT.items():
        assert families.get(name) == kind, name


def test_second_histograms_have_a_half_second_bucket() -> None:
    from service import metrics

    for histogram in (metrics.REQUEST_DURATION, metrics.QUEUE_WAIT, metrics.BATCH_COMPUTE):
        assert 0.5 in histogram._upper_bounds


def test_gpu_memory_is_exposed_exactly_where_there_is_a_gpu() -> None:
    import torch  # loaded: the gauge only reads an already imported torch

    cuda = torch.cuda.is_available()
    assert install_gpu_memory_gauge() is cuda
    assert (b"paella_gpu_memory_bytes" in render_metrics()[0]) is cuda


WRITER = """
import os, sys
from service import metrics
metrics.IMAGES_GENERATED.inc(int(sys.argv[1]))
metrics.WORKER_UP.inc()
metrics.QUEUE_DEPTH.set(int(sys.argv[1]))
print(os.getpid())
"""

READER = """
import sys
from service import metrics
for pid in sys.argv[1:]:
    metrics.mark_process_dead(int(pid))
sys.stdout.write(metrics.render_metrics()[0].decode())
"""


def test_multiprocess_mode_sums_across_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def python(code: str, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, check=True
        ).stdout

    first = python(WRITER, "2").strip()
    python(WRITER, "3")
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(python(READER, first))
        for s in f.samples
        if s.name.startswith("paella_")
    }
    assert samples["paella_images_generated_total"] == 5
    assert samples["paella_worker_up"] == 1  # the first writer was marked dead
    assert samples["paella_queue_depth"] == 3  # the most recent value, from the live process


def dashboard_queries() -> dict[str, list[str]]:
    """The PromQL of each graph panel of the provisioned dashboard, by title (rows hold none)."""
    dashboard = json.loads((REPO / "docker" / "grafana-dashboard.json").read_text())
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"] if p["type"] != "row"}


def exposed_series() -> set[str]:
    """Every series a family can expose, whether or not a labelled child has been created yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exposed = {
        f.name + suffix
        for f in text_string_to_metric_families(render_metrics()[0].decode())
        for suffix in suffixes.get(f.type, ("",))
    }
    return exposed | {"paella_gpu_memory_bytes"}  # only where CUDA is


def test_dashboard_queries_only_exposed_metrics() -> None:
    queries = dashboard_queries()
    assert all(queries.values()), [title for title, exprs in queries.items() if not exprs]
    used = {name for exprs in queries.values() for expr in exprs for name in re.findall(r"paella_\w+", expr)}
    assert used and used <= exposed_series(), used - exposed_series()


def test_dashboard_shows_every_metric_and_the_objective() -> None:
    text = " ".join(expr for exprs in dashboard_queries().values() for expr in exprs)
    families = {name.removesuffix("_total") for name in re.findall(r"paella_\w+", text)}
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in families}
    exported = {f.name for f in text_string_to_metric_families(render_metrics()[0].decode())}
    exported = {n for n in exported if n.startswith("paella_") and not n.endswith("_created")}
    exported |= {"paella_gpu_memory_bytes"}  # only where CUDA is
    assert families >= exported, exported - families
    panels = json.loads((REPO / "docker" / "grafana-dashboard.json").read_text())["panels"]
    latency = [p for p in panels if "objective 0.5 s" in p["title"]]
    assert latency, "no panel holds latency against the objective"
    for panel in latency:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [step["value"] for step in steps] == [None, 0.5], panel["title"]


def test_the_executor_counts_the_pipelines_graph_events_once_each(tiny_model_dir: Path) -> None:
    """paella_cuda_graphs_total follows `Pipeline.graph_events`: warm-up's captures, then a setting warm-up
    did not meet (previews) run uncaptured; counted after a batch, never twice."""
    import dataclasses

    from prometheus_client import REGISTRY

    from model.ops import Draw, Generate
    from model.pipeline import Pipeline
    from service.gpu.executor import Executor

    def count(event: str) -> float:
        return REGISTRY.get_sample_value("paella_cuda_graphs_total", {"event": event}) or 0.0

    pipe = Pipeline.from_folder(tiny_model_dir)
    pipe.accelerate((1, 2), compile=False, capture=False)
    executor = Executor(pipe)
    pipe.warmup(2, width=32, height=32)
    before = {e: count(e) for e in ("captured", "uncaptured", "late")}
    rows = pipe.rows([Draw(Generate("a red circle", 32, 32), 1, pipe.config.sampler)])
    pipe.sample(dataclasses.replace(rows, snapshots=(1,)))
    for _ in range(2):
        executor._count_graph_events()
    assert count("captured") - before["captured"] == pipe.graph_events["captured"] > 0
    assert count("uncaptured") - before["uncaptured"] == 1
    assert count("late") == before["late"]
