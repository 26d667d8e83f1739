"""The alert rules pass promtool's own unit tests, and every query of the
Grafana dashboard (and of the rules) names a metric the daemon exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client.metrics_core import Metric

from conftest import require_tool
from daemon.metrics import Metrics

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
RULES = CONTRIB / "prometheus" / "m365sync.rules.yml"
DASHBOARD = CONTRIB / "grafana" / "m365sync.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "info": ("_info",), "summary": ("_sum", "_count", "_created")}


def exported() -> set[str]:
    """Every sample name the daemon's registry can expose (also for label sets not seen yet)."""
    names: set[str] = set()
    family: Metric
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:m365sync|process)_[a-z_]+)\b", expr))


def test_the_alert_rules_pass_promtool() -> None:
    promtool = require_tool("promtool", "prometheus")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", "m365sync.rules.test.yml"], cwd=RULES.parent,
                          capture_output=True, text=True, timeout=60)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_every_dashboard_and_rule_query_names_an_exported_metric() -> None:
    known = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), str)]
    queries += re.findall(r"expr: (.+)", RULES.read_text())
    assert len(queries) > 20
    unknown = {name for q in queries for name in metric_names(q)} - known
    assert unknown == set(), f"not exported by the daemon: {sorted(unknown)}"
    assert all(metric_names(t["expr"]) for p in dashboard["panels"] for t in p["targets"])  # no empty panels
    assert "m365sync_schedule_interval_seconds" in known and "m365sync_sync_runs_total" in known


def test_the_dashboard_covers_every_alerted_metric() -> None:
    text = DASHBOARD.read_text()
    for name in metric_names(RULES.read_text()):
        assert name in text, name
