"""Fuzz the HTTP API from the OpenAPI document it serves at /openapi.json.

schemathesis generates requests for every operation, valid and invalid ones, and
sends them to a real server with real tokens (and signed webhooks). Every answer
must be no server error and exactly as documented (status code, content type,
body schema), and a refused request must change no money."""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gifting_server.api.openapi import openapi_document
from gifting_server.auth import Role, sign_webhook
from tests.conftest import WEBHOOK_SECRET, ServerThread, make_settings
from tests.factories import auth, signed_webhook
from tests.faults import money_state_sync
from tests.faults.conftest import FAULT_DEFAULTS
from tests.topology import on_cluster, sync_client

# Fewer on the cluster's run: what is fuzzed is the edge's own validation, the same
# code over either Redis; the cluster's run checks that a refusal changes nothing on
# its paths too (each script's argument checks run on both: test_script_arguments).
EXAMPLES_PER_OPERATION = 10 if on_cluster() else 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Who calls each operation: its documented role, so that requests get past auth.
STREAMER_OPERATIONS = {
    "POST /v1/streams",
    "POST /v1/streams/{stream_id}/end",
    "POST /v1/cashouts",
    # POST /v1/webhooks stays a viewer's (403): a streamer's would resolve made-up
    # host names, and this test must not depend on the machine's DNS.
    "GET /v1/webhooks",
    "DELETE /v1/webhooks/{webhook_id}",
    "POST /v1/webhooks/{webhook_id}/rotate-secret",
    "POST /v1/webhooks/{webhook_id}/enable",
    "POST /v1/webhooks/{webhook_id}/test",
}
WEBHOOK = "POST /v1/payments/webhook"

# The document the server serves, built from the same settings the fuzzed server runs
# with (the `fuzzed` fixture checks that /openapi.json is this very document).
DOCUMENT = openapi_document(
    make_settings("redis://unused", Path(tempfile.gettempdir()), **FAULT_DEFAULTS)
)
schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))


@pytest.fixture
def fuzzed(redis_url: str, tmp_path: Path) -> Iterator[ServerThread]:
    """A server whose Redis holds a live stream s1 and a funded viewer."""
    with ServerThread(make_settings(redis_url, tmp_path, **FAULT_DEFAULTS)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            live = http.post(
                "/v1/streams", json={"stream_id": "s1"}, headers=auth("streamer1", Role.STREAMER)
            )
            assert live.status_code == 201, live.text
            raw, headers = signed_webhook(
                {
                    "event_id": "seed",
                    "type": "payment.succeeded",
                    "user_id": "alice",
                    "package_id": "coins_10000",
                }
            )
            assert http.post("/v1/payments/webhook", content=raw, headers=headers).is_success
            assert http.get("/openapi.json").json() == DOCUMENT
        yield server


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """Half the requests name the live stream s1, so gifts and boards get past 404."""
    if not isinstance(path_parameters, dict) or "stream_id" not in path_parameters:
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, "stream_id": "s1"}])


KNOWN = {"gift_id": "rose", "package_id": "coins_100"}


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Half the bodies name a gift or package of the catalog, so they get past 404."""
    if not isinstance(body, dict) or not KNOWN.keys() & body.keys():
        return st.just(body)
    known = {name: KNOWN[name] for name in KNOWN.keys() & body.keys()}
    return st.sampled_from([body, {**body, **known}])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_fuzzed_requests_get_documented_answers_and_refusals_change_nothing(
    case: schemathesis.Case, fuzzed: ServerThread, redis_url: str
) -> None:
    client = sync_client(redis_url, decode_responses=True)
    try:
        before = money_state_sync(client)
        operation = f"{case.method.upper()} {case.path}"
        if operation == WEBHOOK:
            response = call_signed(case, fuzzed.url)
        else:
            role = Role.STREAMER if operation in STREAMER_OPERATIONS else Role.VIEWER
            user = "streamer1" if role is Role.STREAMER else "alice"
            response = case.call(base_url=fuzzed.url, headers=auth(user, role), timeout=10)
        case.validate_response(response, checks=CHECKS)
        assert "Traceback" not in response.text
        if response.status_code >= 400:
            assert money_state_sync(client) == before, response.text
    finally:
        client.close()


def call_signed(case: schemathesis.Case, base_url: str) -> httpx.Response:
    """Send the generated webhook with a valid signature of the exact bytes sent."""
    request = case.as_transport_kwargs(base_url=base_url)
    headers = dict(request.get("headers") or {})
    if "json" in request:
        body = json.dumps(request["json"]).encode()
        headers["Content-Type"] = "application/json"
    else:
        data = request.get("data") or b""
        body = data.encode() if isinstance(data, str) else bytes(data)
    headers["Gifting-Signature"] = sign_webhook(WEBHOOK_SECRET, body, int(time.time()))
    return httpx.post(request["url"], content=body, headers=headers, timeout=10)
