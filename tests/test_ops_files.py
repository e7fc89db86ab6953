"""ops/: the Prometheus alerts and the Grafana dashboard name only metrics a
real /metrics scrape serves, every alert says how bad it is and links a
runbook that exists, and promtool accepts the rules (and their unit tests)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

import notifications.api.intake  # noqa: F401 - registers the intake's metrics, as the web process does
from notifications.models import SweepRun
from tests.test_metrics_cockpit import attempt, delivery_row

ROOT = Path(settings.BASE_DIR)
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "ops" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "clarion.json"
OPERATIONS = ROOT / "docs" / "operations.md"
# Series Prometheus itself makes, not Clarion.
PROMETHEUS_OWN = {"up"}
METRIC = re.compile(r"\b(?:clarion|django)_[a-z0-9_]+\b|\bup\b(?=\s*\{)")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
}
needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")


@pytest.fixture
def served(client, comment_type) -> set[str]:
    """Every metric name a scrape of /metrics serves, with some data behind it."""
    SweepRun.objects.create(name="event relay", started_at=timezone.now(), duration_ms=3)
    attempt(delivery_row(comment_type, "o1", "email", status="sent"), "sent")
    client.get("/healthz")  # django-prometheus' request metrics get samples
    names = set()
    text = client.get("/metrics").content.decode()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names | PROMETHEUS_OWN


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


@needs_promtool
def test_promtool_accepts_the_alerting_rules():
    check = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True)

    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


@needs_promtool
def test_the_alerts_fire_in_promtool_unit_tests():
    check = subprocess.run(["promtool", "test", "rules", str(ALERT_TESTS)], capture_output=True)

    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists():
    anchors = heading_anchors(OPERATIONS.read_text())

    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor in anchors, rule["alert"]


@pytest.mark.django_db
def test_every_alert_expression_names_only_served_metrics(served):
    for rule in alert_rules():
        names = set(METRIC.findall(rule["expr"]))
        assert names, rule["alert"]
        assert names <= served, (rule["alert"], names - served)


@pytest.mark.django_db
def test_every_dashboard_query_names_only_served_metrics(served):
    queried = 0
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, (panel["title"], target["expr"])
            assert names <= served, (panel["title"], names - served)
            queried += 1
    assert queried >= 20


def test_the_dashboard_has_a_row_per_part_of_the_pipeline_and_a_sound_layout():
    panels = dashboard_panels()
    rows = [p["title"] for p in panels if p["type"] == "row"]

    assert rows == [
        "Intake",
        "Fan-out",
        "Queues",
        "Delivery by channel",
        "Latency",
        "Sweeps",
        "Breakers",
    ]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
