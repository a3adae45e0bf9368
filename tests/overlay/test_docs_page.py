"""/docs: the OpenAPI document rendered in a real browser from the server's own files."""

from __future__ import annotations

import httpx

from gifting_server.api.openapi import openapi_document
from tests.conftest import ServerThread
from tests.overlay.conftest import Pages


def test_docs_lists_every_operation_of_the_openapi_document(
    pages: Pages, server: ServerThread
) -> None:
    document = openapi_document(server.server.config.app.state.store.settings)
    expected = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }

    page = pages.open(f"{server.url}/docs", viewport={"width": 1200, "height": 900})
    page.wait_for_selector("#operations[aria-busy='false']")

    shown = {
        " ".join(h3.inner_text().split()) for h3 in page.locator("#operations .operation h3").all()
    }
    assert shown == expected
    assert page.locator("#op-post--v1-streams-stream-id-gifts").inner_text().count("idempotency")
    assert page.locator("#schema-GiftReceipt").is_visible()
    assert "gifting_server API" in page.title()
    loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert f"{server.url}/openapi.json" in loaded
    assert all(url.startswith(server.url) for url in loaded), loaded


def test_docs_is_served_with_a_policy_that_allows_only_this_origin(server: ServerThread) -> None:
    response = httpx.get(f"{server.url}/docs", timeout=10)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "http://" not in response.text and "https://" not in response.text
