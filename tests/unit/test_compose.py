"""docker-compose.yml (CONTRACT §1): the router on PostgreSQL 16 through
SMSROUTER_DATABASE_URL, Prometheus with the alert rules, Grafana with the
dashboard provisioned. No Docker here: the file is parsed and its keys and
the files it mounts are checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Made beside this file by the dashboards' and alerts' own change.
MADE_ELSEWHERE = {"deploy/prometheus/alerts.yml", "deploy/grafana/smsrouter.json"}


def _compose() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(compose, dict)
    return compose


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path of the service's bind mounts (./...)."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("./"):
            mounts[container] = host[2:]
    return mounts


def test_the_services_and_how_the_router_reaches_its_database() -> None:
    services = _compose()["services"]
    assert {"postgres", "smsrouter", "prometheus", "grafana"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    router = services["smsrouter"]
    assert router["build"] == "."
    url = router["environment"]["SMSROUTER_DATABASE_URL"]
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert router["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    # The data volume is the image's VOLUME.
    assert any(v.endswith(":/var/lib/smsrouter") for v in router["volumes"])
    assert "VOLUME" in (ROOT / "Dockerfile").read_text()
    assert {"8080:8080", "2775:2775"} <= set(router["ports"])


def test_every_named_volume_is_declared() -> None:
    compose = _compose()
    named = {
        v.split(":")[0]
        for s in compose["services"].values()
        for v in s.get("volumes", [])
        if not v.startswith(("./", "/"))
    }
    assert named <= set(compose["volumes"])


def test_prometheus_scrapes_the_router_and_loads_the_alert_rules() -> None:
    prometheus = _compose()["services"]["prometheus"]
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus/alerts.yml"] == "deploy/prometheus/alerts.yml"
    config = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["smsrouter:8080"]


def test_grafana_provisions_the_dashboard_from_prometheus() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = _mounts(grafana)
    dashboards_dir = "/var/lib/grafana/dashboards"
    assert mounts[f"{dashboards_dir}/smsrouter.json"] == "deploy/grafana/smsrouter.json"
    provider_dir = ROOT / mounts["/etc/grafana/provisioning/dashboards"]
    (provider,) = yaml.safe_load((provider_dir / "smsrouter.yml").read_text())["providers"]
    assert provider["options"]["path"] == dashboards_dir
    sources_dir = ROOT / mounts["/etc/grafana/provisioning/datasources"]
    (source,) = yaml.safe_load((sources_dir / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"


def test_every_mounted_file_exists() -> None:
    for service in _compose()["services"].values():
        for host in _mounts(service).values():
            assert (ROOT / host).exists() or host in MADE_ELSEWHERE, host
