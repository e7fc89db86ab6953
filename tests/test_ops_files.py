"""ops/: the Prometheus alerts and the Grafana dashboard name only metrics a
real /metrics scrape serves, every alert says how bad it is and links a
runbook that exists, promtool accepts the rules (and their unit tests), and
the dashboard decodes through Grafana's own dashboard model (the Grafana
Foundation SDK, generated from Grafana's schema) without losing a field."""

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
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import panelcfg_config
from grafana_foundation_sdk.models.dashboard import Dashboard
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


# Keys of Grafana's export format around the dashboard model ("Import" reads them).
EXPORT_ONLY = {"__inputs", "__requires", "__elements"}


def lost_in_grafanas_model(exported: dict) -> list[str]:
    """Paths of the fields (or values) the dashboard model of Grafana drops or
    changes when it decodes `exported`, panel options and Prometheus queries
    through their own typed models."""
    register_default_plugins()
    dashboard = {key: value for key, value in exported.items() if key not in EXPORT_ONLY}
    decoded = json.loads(json.dumps(Dashboard.from_json(dashboard).to_json(), cls=JSONEncoder))
    return differences(dashboard, decoded)


def differences(original: object, decoded: object, path: str = "") -> list[str]:
    if isinstance(original, dict):
        if not isinstance(decoded, dict):
            return [f"{path}: not an object"]
        return [
            found
            for key, value in original.items()
            for found in (
                differences(value, decoded[key], f"{path}/{key}")
                if key in decoded
                else [f"{path}/{key}: dropped"]
            )
        ]
    if isinstance(original, list):
        if not isinstance(decoded, list) or len(decoded) != len(original):
            return [f"{path}: list changed"]
        return [
            found
            for i, (item, decoded_item) in enumerate(zip(original, decoded, strict=True))
            for found in differences(item, decoded_item, f"{path}[{i}]")
        ]
    return [] if original == decoded else [f"{path}: {original!r} became {decoded!r}"]


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


def test_the_dashboard_decodes_through_grafanas_model_losing_nothing():
    assert lost_in_grafanas_model(json.loads(DASHBOARD.read_text())) == []


def test_every_dashboard_panel_is_a_core_grafana_panel_with_typed_options():
    register_default_plugins()
    for panel in dashboard_panels():
        if panel["type"] != "row":
            assert panelcfg_config(panel["type"]) is not None, panel["type"]


def test_a_misspelled_dashboard_field_is_caught_by_grafanas_model():
    dashboard = json.loads(DASHBOARD.read_text())
    panel = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    panel["gridpos"] = panel.pop("gridPos")
    panel["options"]["legend"]["displaymode"] = "table"

    lost = lost_in_grafanas_model(dashboard)

    index = dashboard["panels"].index(panel)
    assert f"/panels[{index}]/gridpos: dropped" in lost
    assert f"/panels[{index}]/options/legend/displaymode: dropped" in lost
