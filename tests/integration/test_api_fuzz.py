"""schemathesis against the served OpenAPI document: no input gets a 5xx, every response is documented.

Bounded: a few dozen generated requests per operation, with and without the API key, valid and invalid.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from control_api.app import create_app
from control_api.settings import ApiSettings
from tests.conftest import API_KEY
from tests.integration.test_access_control import WRITE_A, scoped_settings

EXAMPLES = 25


@pytest.fixture
def served_api(api_settings: ApiSettings) -> Iterator[str]:
    """The API under uvicorn on its own thread: schemathesis makes blocking calls."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(scoped_settings(api_settings)), host="127.0.0.1", port=0, log_config=None, lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn-under-fuzz", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "uvicorn exited"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(30)


def run_operation(operation: Any, base_url: str, headers: dict[str, str], mode: GenerationMode) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        if mode is GenerationMode.POSITIVE:
            # The schema cannot express cross-field rules (kline needs a symbol, depth depends on the
            # category), so a schema-valid body may rightly get a 400: only that check is left out.
            case.call_and_validate(base_url=base_url, headers=headers, excluded_checks=[positive_data_acceptance])
            return
        response = case.call(base_url=base_url, headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"code", "message", "details"}

    try:
        check()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid input to send


@pytest.mark.parametrize("key", [API_KEY, WRITE_A, None], ids=["admin-key", "scoped-key", "without-key"])
def test_no_generated_request_gets_a_5xx_or_an_undocumented_response(served_api: str, key: str | None) -> None:
    schema = schemathesis.openapi.from_url(f"{served_api}/schema/openapi.json")
    headers = {"X-API-Key": key} if key else {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:
        run_operation(operation, served_api, headers, GenerationMode.POSITIVE)
        run_operation(operation, served_api, headers, GenerationMode.NEGATIVE)


def test_unknown_query_parameters_and_huge_pages_get_the_error_shape(served_api: str) -> None:
    with httpx.Client(base_url=served_api, headers={"X-API-Key": API_KEY}) as client:
        for params in ({"limit": "501"}, {"offset": "-3"}, {"is_active": "maybe"}, {"limit": "9" * 40}):
            response = client.get("/api/v1/subscriptions", params=params)
            assert response.status_code == 400, (params, response.text)
            assert response.json()["error"]["code"] == "validation_error"
