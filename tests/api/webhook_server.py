"""The settings of the servers the outgoing-webhook tests start (test_webhooks*.py;
their fixtures are in conftest.py)."""

from __future__ import annotations

from typing import Any

# Deliveries within milliseconds, retries within tens of them.
FAST_WEBHOOKS: dict[str, Any] = {
    "allow_private": True,
    "poll_ms": 20,
    "retry_base_ms": 20,
    "retry_max_ms": 200,
    "timeout_s": 2.0,
    "lease_ms": 3000,
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "limits": {"gift_rate_per_s": 10_000, "gift_burst": 10_000, "combo_window_ms": 600_000},
    "webhooks": FAST_WEBHOOKS,
}
