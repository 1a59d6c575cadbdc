"""Property-based fuzzing of every endpoint from the OpenAPI document (schemathesis): no input gets a 5xx."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from model.pipeline import Pipeline
from service.app import create_app
from service.settings import Settings
from tests.service.live import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tiny_model_dir: Any) -> Iterator[LiveServer]:
    config = Settings(weights=tiny_model_dir, device="cpu", max_body_bytes=256 * 1024, request_timeout_s=20)
    with LiveServer(create_app(config, pipeline=Pipeline.from_folder(tiny_model_dir))) as server:
        yield server


def test_no_request_to_any_endpoint_gets_a_5xx(live: LiveServer) -> None:
    api = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 11  # every image endpoint, models, health, readiness, metrics
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def no_5xx(case: Any) -> None:
            response = case.call(base_url=live.url, timeout=60)
            statuses[response.status_code] += 1
            where = f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
            assert response.status_code < 500, where
            if response.status_code >= 400:
                assert set(response.json()) == {"error"}, where

        no_5xx()
    assert statuses[200] > 0 and sum(statuses[s] for s in statuses if 400 <= s < 500) > 100, statuses
