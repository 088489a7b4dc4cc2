"""The OpenAPI schema, fuzzed by schemathesis against the real server (uvicorn on 127.0.0.1).

For every operation in `/openapi.json`, schemathesis sends requests built from the schema — valid ones
and deliberately invalid ones (wrong types, missing or malformed bodies, odd query strings) — and checks
that the server never answers 5xx and that every answer matches the response schema it documents.

The schema is built from the app itself (building the app loads no model) rather than loaded lazily from
the live server's fixture: `schemathesis.pytest.from_fixture` (4.32) reads `request.node._nodeid`, which
pytest 9 no longer has. `test_the_live_server_publishes_this_schema` checks the two are the same.
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from digitrec.server.app import create_app
from digitrec.server.settings import ServerSettings

CASES_PER_OPERATION = 300  # bounded so the file runs in well under a minute


OPENAPI = create_app(ServerSettings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@schema.parametrize()
@settings(max_examples=CASES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_never_fails_and_matches_its_schema(live_server: str, case: schemathesis.Case) -> None:
    case.call_and_validate(base_url=live_server, checks=[not_a_server_error, response_schema_conformance],
                           timeout=30)


def test_the_live_server_publishes_this_schema(live_server: str) -> None:
    response = httpx.get(f"{live_server}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.json() == OPENAPI


def test_the_schema_lists_every_operation() -> None:
    """The fuzzing above reaches every route clients use (fails if an operation drops out of the schema)."""
    operations = {(result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()}
    assert {("POST", "/api/v1/predict"), ("GET", "/api/v1/model"), ("GET", "/healthz")} <= operations
