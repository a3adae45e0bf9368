"""The Grafana dashboard queries only metrics the server exports, and every metric
the server exports is documented in docs/metrics.md: neither can drift."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from gifting_server import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD: dict[str, Any] = json.loads(
    (ROOT / "deploy" / "grafana" / "gifting-dashboard.json").read_text()
)
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def families() -> dict[str, str]:
    """Every metric family the server exports (name → type), the embedded Redis's too."""
    found = {f.name: f.type for f in REGISTRY.collect() if f.name.startswith("gifting_")}
    found.update({f.name: f.type for f in metrics.embedded_redis(True, 0)})
    return found


def exported_samples() -> set[str]:
    return {name + suffix for name, kind in families().items() for suffix in SUFFIXES[kind]}


def queried() -> set[str]:
    exprs = [t["expr"] for panel in DASHBOARD["panels"] for t in panel.get("targets", [])]
    return {name for expr in exprs for name in re.findall(r"\bgifting_[a-z_]+", expr)}


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    assert queried()  # the pattern finds them
    assert queried() - exported_samples() == set()


def test_the_dashboard_has_the_operator_panels() -> None:
    titles = {panel["title"] for panel in DASHBOARD["panels"]}
    assert {
        "Gifts/s by outcome",
        "Gift ack latency",
        "Deliveries/s",
        "Connections",
        "Slow-client cut-offs and other drops",
        "Redis health",
        "Overload refusals",
        "Webhook delivery backlog",
    } <= titles
    assert DASHBOARD["__inputs"][0]["pluginId"] == "prometheus"


def test_every_exported_metric_is_documented() -> None:
    documented = (ROOT / "docs" / "metrics.md").read_text()
    names = [name + ("_total" if kind == "counter" else "") for name, kind in families().items()]
    assert [name for name in names if f"`{name}`" not in documented] == []
