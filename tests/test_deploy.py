"""What can be checked of the deployment without Docker: the compose file parses and every
file, port and variable it names exists; Prometheus config and alert rules pass promtool;
every metric the dashboard and the alerts query is one /metrics really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from app.config import Settings
from app.observability.gpu import GpuCollector
from tests.conftest import bearer, make_key
from tests.observability.test_gpu_metrics import SimulatedNvml
from tests.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_compose_services_files_ports_and_settings() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"app", "app-gpu", "postgres", "redis", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name}: {source} missing"
    settings_fields = {f"TOLLGATE_{f.upper()}" for f in Settings.model_fields}
    for name in ("app", "app-gpu"):
        for var in services[name].get("environment", {}):
            assert var in settings_fields, f"{name}: {var} is not a setting"
    assert services["app-gpu"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ] == ["gpu"]
    assert "8000:8000" in services["app"]["ports"]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "EXPOSE 8000" in dockerfile
    for source in re.findall(r"^COPY (?!--from=)(\S+)", dockerfile, re.M):
        assert (REPO_ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert "tollgate migrate" in dockerfile  # migrations run on start


def test_the_image_runs_the_built_wheel_not_the_source_tree() -> None:
    """The last stage installs the wheel the build stage made; no source is copied in."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    build, runtime = re.split(r"^FROM ", dockerfile, flags=re.M)[-2:]
    assert re.search(r"pip wheel .*--wheel-dir /dist", build)
    copies = re.findall(r"^COPY (.+)$", runtime, re.M)
    assert copies and all(c.startswith("--from=") for c in copies), copies
    assert re.search(r"pip install .*tollgate-\*\.whl", runtime)
    assert " -e " not in runtime
    assert "tollgate migrate" in runtime
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["app:8000"]


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian package prometheus; .ci/run installs it)",
)
def test_promtool_accepts_config_and_rules() -> None:
    for args in (
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
    ):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def _queried_metrics() -> set[str]:
    exprs = [
        t["expr"]
        for p in json.loads((DEPLOY / "grafana" / "dashboards" / "tollgate.json").read_text())[
            "panels"
        ]
        for t in p["targets"]
    ]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    names = set()
    for expr in exprs:
        for name in re.findall(r"\b(tollgate_[a-z_]+)", expr):
            names.add(re.sub(r"_(bucket|sum|count|total)$", "", name))
    return names


async def test_dashboard_and_alerts_query_exported_metrics(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    await client.post("/v1/models/linreg/predict", json={"inputs": [0.0] * 10}, headers=bearer(key))
    exposition = (await client.get("/metrics")).text
    exported = set(re.findall(r"^# TYPE (tollgate_[a-z_]+) ", exposition, re.M))
    exported = {re.sub(r"_total$", "", n) for n in exported}
    # GPU series exist only on a GPU machine: take their names from the collector fed
    # with simulated NVML readings.
    registry = CollectorRegistry()
    registry.register(GpuCollector(SimulatedNvml()))
    exported |= {m.name for m in registry.collect()}
    missing = _queried_metrics() - exported
    assert missing == set(), f"queried but never exported: {missing}"
    panels = {
        p["title"]
        for p in json.loads((DEPLOY / "grafana" / "dashboards" / "tollgate.json").read_text())[
            "panels"
        ]
    }
    assert len(panels) >= 10


def test_kubernetes_manifests_parse_and_match_the_service() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "tollgate.yaml").read_text()))
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    settings_fields = {f"TOLLGATE_{f.upper()}" for f in Settings.model_fields}
    for var in container["env"]:
        assert var["name"] in settings_fields | {"PROMETHEUS_MULTIPROC_DIR"}
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"] == ["tollgate", "migrate"]
