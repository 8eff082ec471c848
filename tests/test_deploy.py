"""What can be checked of the deployment without Docker or a cluster: the compose file is a
valid Compose file (the compose-spec parser) and every file, port, volume and variable it
names exists; the Dockerfile's stages; Prometheus, Alertmanager and nginx configs pass their
own tools, and the proxy, run in front of a stub app, answers the app's limits with the
app's error body; the Kubernetes manifests match the Kubernetes JSON schemas (offline, from
the kubernetes-validate package) and keep their structural promises; every metric the
dashboard and the alerts query is one /metrics really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from compose_spec.compose_spec import PyOptions
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from app.config import Settings
from app.observability.gpu import GpuCollector
from tests.conftest import bearer, make_key
from tests.observability.test_gpu_metrics import SimulatedNvml
from tests.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
NGINX_CONF = DEPLOY / "nginx" / "tollgate.conf"
SETTINGS_VARS = {f"TOLLGATE_{f.upper()}" for f in Settings.model_fields}
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
# The oldest Kubernetes minor the manifests target (autoscaling/v2, policy/v1, batch/v1
# ttlSecondsAfterFinished are all GA there) and the newest the schemas know.
KUBE_VERSIONS = ("1.27", kubernetes_validate.latest_version())


def _setting_default(name: str, fallback: float) -> float:
    """The app's default for a setting; ``fallback`` where the setting does not exist (yet)."""
    field = Settings.model_fields.get(name)
    return float(field.default) if field is not None else fallback


# The proxy must enforce the app's own limits (issue 13: 16 KiB per header line, 64 KiB of
# headers in all, the body limit, 10 s for the headers and 30 s for the body).
MAX_HEADER_LINE = _setting_default("max_header_bytes", 16 * 1024)
MAX_HEADERS_TOTAL = _setting_default("max_headers_total_bytes", 64 * 1024)
MAX_BODY = _setting_default("max_body_bytes", 4 * 1024 * 1024)
HEADER_TIMEOUT_S = _setting_default("header_timeout_s", 10.0)
BODY_TIMEOUT_S = _setting_default("body_timeout_s", 30.0)


# --- docker compose -------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def _parsed_compose(text: str) -> dict[str, Any]:
    """The compose-spec parser's view (YAML merge keys applied), as `docker compose config`
    would refuse what it refuses: unknown keys, bad ports or durations, undefined secrets
    or networks."""
    compose = PyOptions(apply_merge=True).from_yaml(text)
    compose.validate()
    return compose.to_dict()  # type: ignore[no-any-return]


def test_compose_file_is_a_valid_compose_file() -> None:
    parsed = _parsed_compose((REPO_ROOT / "docker-compose.yml").read_text())
    services = parsed["services"]
    assert set(services) == {
        "proxy", "app", "app-gpu", "postgres", "redis", "prometheus", "alertmanager", "grafana"
    }  # fmt: skip
    # What the parser leaves to `docker compose config`: references between sections.
    named_volumes = set(parsed.get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name}: {source} missing"
            else:
                assert source in named_volumes, f"{name}: volume {source} is not declared"
    # The check can fail: a misspelled key is refused, like `docker compose config` does.
    with pytest.raises(ValueError, match="enviroment"):
        _parsed_compose("services:\n  app:\n    image: x\n    enviroment: {A: b}\n")


def test_compose_required_variables_are_documented() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required == {"TOLLGATE_SECRET_KEY", "POSTGRES_PASSWORD"}
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    for var in required:
        assert var in operations, f"{var} is required by compose but not in docs/operations.md"


def test_compose_services_images_ports_and_settings() -> None:
    services = _compose()["services"]
    for name in ("app", "app-gpu"):
        for var in services[name].get("environment", {}):
            assert var in SETTINGS_VARS, f"{name}: {var} is not a setting"
    # The proxy is the only published port of the app; the app is reached through it.
    assert "ports" not in services["app"] and "ports" not in services["app-gpu"]
    assert services["proxy"]["ports"] == ["8000:8080"]
    assert (
        "./deploy/nginx/tollgate.conf:/etc/nginx/conf.d/default.conf:ro"
        in (services["proxy"]["volumes"])
    )
    assert "listen 8080;" in NGINX_CONF.read_text()
    assert "server app:8000;" in NGINX_CONF.read_text()
    # The GPU service is the CUDA image, not the CPU one with a device setting.
    assert services["app"]["build"] == {"context": ".", "target": "runtime"}
    assert services["app-gpu"]["build"] == {"context": ".", "target": "cuda"}
    assert services["app"]["image"] == f"tollgate:{VERSION}"
    assert services["app-gpu"]["image"] == f"tollgate:{VERSION}-cuda"
    assert services["app-gpu"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ] == ["gpu"]
    assert services["app-gpu"]["networks"]["default"]["aliases"] == ["app"]
    # Monitoring without a login listens on the host's loopback only.
    for name in ("prometheus", "alertmanager"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
    # Prometheus finds every replica answering to `app` and sends alerts to Alertmanager.
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = scrape["scrape_configs"][0]
    assert job["dns_sd_configs"] == [
        {"names": ["app"], "type": "A", "port": 8000, "refresh_interval": "30s"}
    ]
    assert scrape["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    assert scrape["rule_files"] == ["alerts.yml"]


def test_compose_keeps_data_and_grafana_requires_a_login() -> None:
    compose = _compose()
    services = compose["services"]
    data = {
        "prometheus": "prometheus-data:/prometheus",
        "alertmanager": "alertmanager-data:/alertmanager",
        "grafana": "grafana-data:/var/lib/grafana",
        "postgres": "pgdata:/var/lib/postgresql/data",
    }
    for name, mount in data.items():
        assert mount in services[name]["volumes"], name
        assert mount.split(":")[0] in compose["volumes"]
    assert "--storage.tsdb.path=/prometheus" in services["prometheus"]["command"]
    assert "--storage.path=/alertmanager" in services["alertmanager"]["command"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana  # never a literal password
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert services["grafana"]["secrets"] == ["grafana_admin_password"]
    secret_file = compose["secrets"]["grafana_admin_password"]["file"]
    # The operator creates the file; git never holds it.
    ignored = subprocess.run(["git", "check-ignore", "-q", secret_file], cwd=REPO_ROOT, check=False)
    assert ignored.returncode == 0, f"{secret_file} is not git-ignored"
    assert (REPO_ROOT / "deploy" / "secrets" / "README.md").exists()
    for name in ("app", "app-gpu"):
        assert services[name]["read_only"] is True
        assert services[name]["cap_drop"] == ["ALL"]
        assert "/tmp" in services[name]["tmpfs"]


# --- Dockerfile ---------------------------------------------------------------------------


def _stages() -> dict[str, tuple[str, str]]:
    """Stage name -> (base image, body)."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    stages = {}
    for part in re.split(r"^FROM ", dockerfile, flags=re.M)[1:]:
        base, _, name = part.splitlines()[0].partition(" AS ")
        stages[name.strip()] = (base.strip(), part)
    return stages


def test_dockerfile_has_a_cuda_stage_installing_the_same_wheel() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    stages = _stages()
    assert list(stages)[-1] == "runtime"  # `docker build .` gives the CPU image
    assert {"build", "cuda", "runtime"} <= set(stages)
    base, cuda = stages["cuda"]
    assert re.fullmatch(r"nvidia/cuda:[0-9.]+-(cudnn-)?runtime-\S+", base), base
    for name in ("cuda", "runtime"):
        body = stages[name][1]
        assert "COPY --from=build /dist/" in body, name
        assert re.search(r"pip install .*tollgate-\*\.whl", body), name
        uid = re.search(r"useradd .*--uid (\d+)", body)
        assert uid and re.search(rf"^USER {uid.group(1)}$", body, re.M), name
        assert uid.group(1) != "0"
        assert "tollgate migrate" in body and "EXPOSE 8000" in body
    assert "download.pytorch.org/whl/cpu" in stages["runtime"][1]
    assert "download.pytorch.org/whl/cpu" not in cuda  # PyPI's torch is the CUDA build
    assert "ENV" in cuda and "TOLLGATE_DEVICE=cuda" in cuda
    # Every TOLLGATE_* the Dockerfile names is a real setting (there is no TOLLGATE_WORKERS).
    for var in re.findall(r"\bTOLLGATE_[A-Z_]+", dockerfile):
        assert var in SETTINGS_VARS, var
    for source in re.findall(r"^COPY (?!--from=)(\S+)", dockerfile, re.M):
        assert (REPO_ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_the_image_runs_the_built_wheel_not_the_source_tree() -> None:
    """The build stage makes the wheel; the CPU and CUDA stages install only that wheel, no
    source is copied in (stages found by name: `cuda` sits between `build` and `runtime`)."""
    stages = _stages()
    assert re.search(r"pip wheel .*--wheel-dir /dist", stages["build"][1])
    for name in ("cuda", "runtime"):
        body = stages[name][1]
        copies = re.findall(r"^COPY (.+)$", body, re.M)
        assert copies and all(c.startswith("--from=build ") for c in copies), (name, copies)
        assert re.search(r"pip install .*tollgate-\*\.whl", body), name
        assert " -e " not in body, name
        assert "tollgate migrate" in body, name


def _dockerfile_uid() -> int:
    uids = {int(u) for u in re.findall(r"--uid (\d+)", (REPO_ROOT / "Dockerfile").read_text())}
    assert len(uids) == 1, uids
    return uids.pop()


# --- Prometheus, Alertmanager, Grafana ------------------------------------------------------


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/bin", "/usr/sbin") if (p := Path(d) / name).exists()), None
    )


@pytest.mark.skipif(
    _tool("promtool") is None,
    reason="promtool not installed (Debian package prometheus; .ci/run installs it)",
)
def test_promtool_accepts_config_and_rules() -> None:
    for args in (
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
    ):
        result = subprocess.run(
            [str(_tool("promtool")), *args], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    _tool("amtool") is None,
    reason="amtool not installed (Debian package prometheus-alertmanager; .ci/run installs it)",
)
def test_amtool_accepts_the_alertmanager_config() -> None:
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    result = subprocess.run(
        [str(_tool("amtool")), "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_severity_has_a_route() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    severities = {r["labels"]["severity"] for g in rules["groups"] for r in g["rules"]}
    assert severities == {"page", "ticket"}
    am = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in am["receivers"]}
    assert am["route"]["receiver"] in receivers  # the default catches `ticket`
    assert {r["receiver"] for r in am["route"]["routes"]} <= receivers
    assert any('severity="page"' in m for r in am["route"]["routes"] for m in r["matchers"])


def _dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tollgate.json").read_text())
    return dashboard["panels"]  # type: ignore[no-any-return]


def _queried_metrics() -> set[str]:
    exprs = [t["expr"] for p in _dashboard_panels() for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    names = set()
    for expr in exprs:
        for name in re.findall(r"\b((?:tollgate|process)_[a-z_]+)", expr):
            names.add(re.sub(r"_(bucket|sum|count|total)$", "", name))
    return names


async def test_dashboard_and_alerts_query_exported_metrics(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    await client.post("/v1/models/linreg/predict", json={"inputs": [0.0] * 10}, headers=bearer(key))
    await client.get("/v1/models")  # a 401
    exposition = (await client.get("/metrics")).text
    exported = set(re.findall(r"^# TYPE ((?:tollgate|process)_[a-z_]+) ", exposition, re.M))
    exported = {re.sub(r"_total$", "", n) for n in exported}
    # GPU series exist only on a GPU machine: take their names from the collector fed
    # with simulated NVML readings.
    registry = CollectorRegistry()
    registry.register(GpuCollector(SimulatedNvml()))
    exported |= {m.name for m in registry.collect()}
    queried = _queried_metrics()
    missing = queried - exported
    assert missing == set(), f"queried but never exported: {missing}"
    assert {
        "tollgate_billable_month_to_date",
        "tollgate_http_responses",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
    } <= queried
    assert len({p["title"] for p in _dashboard_panels()}) >= 15


def test_dashboard_usage_is_month_to_date_from_the_ledger() -> None:
    exprs = {t["expr"]: p["title"] for p in _dashboard_panels() for t in p["targets"]}
    # Not a 30-day window of a per-process counter that counts unbilled items too.
    assert not [e for e in exprs if "[30d]" in e or "increase(tollgate_items_total" in e]
    usage = [e for e in exprs if "tollgate_billable_month_to_date{" in e]
    assert {re.search(r'unit="(\w+)"', e).group(1) for e in usage} == {  # type: ignore[union-attr]
        "requests",
        "items",
        "compute_seconds",
    }
    # Every replica reports the same ledger rows: max across them, never a sum.
    # Per model and variant (each variant its own series, base variant "")
    assert all(e.startswith("max by (model, variant) (") for e in usage)
    refused = [e for e in exprs if "tollgate_http_responses_total" in e]
    assert any('status=~"401|402|429"' in e for e in refused)


# --- the nginx proxy ------------------------------------------------------------------------


def _nginx_directives() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in NGINX_CONF.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.endswith(";") and not line.startswith("return"):
            name, _, value = line[:-1].partition(" ")
            directives.setdefault(name, []).append(value.strip())
    return directives


def _nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([km]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit]


def test_proxy_limits_equal_the_app_settings() -> None:
    d = _nginx_directives()
    count, size = d["large_client_header_buffers"][0].split()
    assert _nginx_size(size) == MAX_HEADER_LINE  # one header line (or request line)
    assert int(count) * _nginx_size(size) == MAX_HEADERS_TOTAL  # all of them
    assert _nginx_size(d["client_header_buffer_size"][0]) <= MAX_HEADER_LINE
    assert _nginx_size(d["client_max_body_size"][0]) == MAX_BODY
    assert d["client_header_timeout"] == [f"{HEADER_TIMEOUT_S:g}s"]
    assert d["client_body_timeout"] == [f"{BODY_TIMEOUT_S:g}s"]
    assert "494 =431 /__tollgate_errors/headers_too_large" in d["error_page"]
    assert "414 =431 /__tollgate_errors/headers_too_large" in d["error_page"]
    assert "413 /__tollgate_errors/body_too_large" in d["error_page"]
    # Each error body is the app's error shape.
    bodies = re.findall(r"return (\d{3}) '(.*)';", NGINX_CONF.read_text())
    assert {status for status, _ in bodies} == {"404", "413", "431", "503"}
    for _, body in bodies:
        error = json.loads(body.replace("\\n", ""))["error"]
        assert set(error) == {"type", "message", "request_id"}
    assert f"exceeds {int(MAX_BODY)} bytes" in NGINX_CONF.read_text()


@pytest.fixture
def stub_app() -> Iterator[tuple[int, list[str]]]:
    """A stand-in for the app behind the proxy: answers 200 and notes each request."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            seen.append(f"{self.command} {self.path}")
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def proxy(stub_app: tuple[int, list[str]], tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    """The shipped nginx config in front of the stub app, as an unprivileged nginx on a free
    loopback port; only the upstream address, the port and the two timeouts (shortened so
    the test does not wait 10 and 30 s) differ from what compose runs."""
    nginx = _tool("nginx")
    if nginx is None:
        pytest.skip("nginx not installed (Debian package nginx-light; .ci/run installs it)")
    app_port, seen = stub_app
    port = _free_port()
    site = NGINX_CONF.read_text()
    for old, new in (
        ("server app:8000;", f"server 127.0.0.1:{app_port};"),
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
        (f"client_header_timeout {HEADER_TIMEOUT_S:g}s;", "client_header_timeout 1s;"),
        (f"client_body_timeout {BODY_TIMEOUT_S:g}s;", "client_body_timeout 1s;"),
    ):
        assert old in site
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    temp = " ".join(
        f"{kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {tmp_path / 'nginx.pid'};\n"
        f"error_log {tmp_path / 'error.log'} info;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log {tmp_path / 'access.log'}; {temp}\n"
        f"include {tmp_path / 'site.conf'}; }}\n"
    )
    args = [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port, seen
    finally:
        process.terminate()
        process.wait(timeout=10)


def _exchange(port: int, data: bytes, wait_s: float = 10.0) -> bytes:
    """Send raw bytes, read until the proxy closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    return received


def _status_and_error(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower()
    return status, json.loads(body)["error"]


def _get(headers: bytes = b"", target: bytes = b"/v1/models") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"Connection: close\r\n\r\n"


def test_proxy_refuses_what_the_app_refuses_with_its_error_body(
    proxy: tuple[int, list[str]],
) -> None:
    port, seen = proxy
    line = int(MAX_HEADER_LINE)
    assert _exchange(port, _get()).startswith(b"HTTP/1.1 200")
    # One header line just under the limit passes; one over it is a 431.
    ok = _exchange(port, _get(b"X-A: " + b"a" * (line - 100) + b"\r\n"))
    assert ok.startswith(b"HTTP/1.1 200")
    status, error = _status_and_error(_exchange(port, _get(b"X-A: " + b"a" * line + b"\r\n")))
    assert (status, error["type"]) == (431, "headers_too_large")
    # Lines each under the limit, together over the total: 431.
    many = b"".join(b"X-%d: " % i + b"a" * (line - 1024) + b"\r\n" for i in range(5))
    status, error = _status_and_error(_exchange(port, _get(many)))
    assert (status, error["type"]) == (431, "headers_too_large")
    # A request line over one buffer: 431 as well (the app's answer), not nginx's 414 page.
    status, error = _status_and_error(_exchange(port, _get(target=b"/v1/" + b"a" * line)))
    assert (status, error["type"]) == (431, "headers_too_large")
    # A declared body over the limit: 413, before any of it is read.
    too_big = b"POST /v1/models/m/predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n" % (
        int(MAX_BODY) + 1
    )
    status, error = _status_and_error(_exchange(port, too_big + b"Connection: close\r\n\r\n"))
    assert (status, error["type"]) == (413, "body_too_large")
    # /metrics is for Prometheus inside, not for the outside.
    status, error = _status_and_error(_exchange(port, _get(target=b"/metrics")))
    assert (status, error["type"]) == (404, "not_found")
    assert seen == ["GET /v1/models", "GET /v1/models"]  # only the two that passed


def test_proxy_closes_slow_requests_before_they_reach_the_app(
    proxy: tuple[int, list[str]],
) -> None:
    port, seen = proxy
    # Headers that never finish, and a body that stops after one byte: nginx closes the
    # connection once its timeout passes (it logs 408; it sends no answer), and the app
    # never sees either request, so no ledger row.
    assert _exchange(port, b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-A: b") == b""
    partial = b"POST /v1/models/m/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\na"
    assert _exchange(port, partial) == b""
    assert seen == []


# --- Kubernetes -----------------------------------------------------------------------------


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def _kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _manifests() if doc["kind"] == kind]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_kubernetes_manifests_match_the_kubernetes_schemas(kube_version: str) -> None:
    for name, doc in _manifests():
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")
    # The check can fail: a misspelled field is refused (strict schemas).
    deployment = json.loads(json.dumps(_kind("Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kube_version, strict=True)


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in _kind("Deployment")] + [
        (j["metadata"]["name"], j["spec"]["template"]["spec"]) for j in _kind("Job")
    ]


def test_kubernetes_pods_run_non_root_read_only_and_bounded() -> None:
    uid = _dockerfile_uid()
    specs = _pod_specs()
    assert len(specs) == 3  # CPU and GPU Deployments, the migration Job
    for name, spec in specs:
        assert "initContainers" not in spec, name
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid, name
        mounts_by_volume = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
            # The only writable paths are emptyDir volumes, /tmp among them.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, name
            for volume in mounts.values():
                assert "emptyDir" in mounts_by_volume[volume], (name, volume)
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            for var in env:
                assert var in SETTINGS_VARS | {"PROMETHEUS_MULTIPROC_DIR"}, (name, var)
            if "PROMETHEUS_MULTIPROC_DIR" in env:
                assert any(env["PROMETHEUS_MULTIPROC_DIR"].startswith(m) for m in mounts)
            assert container["envFrom"] == [{"secretRef": {"name": "tollgate"}}]


def test_kubernetes_deployments_probes_images_and_gpu() -> None:
    deployments = {d["metadata"]["name"]: d for d in _kind("Deployment")}
    assert set(deployments) == {"tollgate", "tollgate-gpu"}
    images = []
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["command"][:2] == ["tollgate", "serve"]
        images.append(container["image"])
    images += [j["spec"]["template"]["spec"]["containers"][0]["image"] for j in _kind("Job")]
    for image in images:
        # A registry placeholder and the release's tag, never `latest`.
        assert image.startswith("registry.example.com/tollgate/tollgate:"), image
        assert image.rsplit(":", 1)[1] in (VERSION, f"{VERSION}-cuda"), image
    gpu = deployments["tollgate-gpu"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["image"].endswith("-cuda")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "TOLLGATE_DEVICE", "value": "cuda"} in gpu["env"]
    cpu = deployments["tollgate"]
    assert "replicas" not in cpu["spec"]  # the HPA owns it
    assert {"name": "TOLLGATE_DEVICE", "value": "cuda"} not in cpu["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]


def test_kubernetes_migration_is_one_job_per_release() -> None:
    (job,) = _kind("Job")
    assert job["metadata"]["name"] == "tollgate-migrate-" + VERSION.replace(".", "-")
    assert job["metadata"]["labels"]["release"] == VERSION
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["tollgate", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0


def test_kubernetes_secret_template_pdb_hpa_and_ingress() -> None:
    (secret,) = _kind("Secret")
    assert set(secret["stringData"]) <= SETTINGS_VARS
    assert {"TOLLGATE_SECRET_KEY", "TOLLGATE_DATABASE_URL"} <= set(secret["stringData"])
    for var, value in secret["stringData"].items():
        placeholder = value == "" or "REPLACE-ME" in value or ".example.internal:" in value
        assert placeholder, f"{var}: a template holds no real secret or address"
    deployments = {d["metadata"]["name"]: d for d in _kind("Deployment")}
    selectors = {n: d["spec"]["selector"]["matchLabels"] for n, d in deployments.items()}
    # One disruption budget per Deployment, selecting exactly its pods.
    budgets = [p["spec"]["selector"]["matchLabels"] for p in _kind("PodDisruptionBudget")]
    assert sorted(budgets, key=str) == sorted(selectors.values(), key=str)
    (hpa,) = _kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert hpa["spec"]["minReplicas"] >= 2
    (service,) = _kind("Service")
    for labels in selectors.values():  # CPU and GPU replicas both behind the Service
        assert service["spec"]["selector"].items() <= labels.items()
    (ingress,) = _kind("Ingress")
    tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert {r["host"] for r in ingress["spec"]["rules"]} <= tls_hosts
    assert all(t["secretName"] for t in ingress["spec"]["tls"])


def test_kubernetes_ingress_routes_the_api_but_not_metrics() -> None:
    from app.main import create_app

    (ingress,) = _kind("Ingress")
    paths = {p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    routed = {"/" + p.strip("/").split("/")[0] for p in paths}
    app = create_app(Settings())
    public = {"/" + p.strip("/").split("/")[0] for p in app.openapi()["paths"]}
    public |= {"/docs", "/openapi.json", "/console"}  # not in the schema, served all the same
    assert public <= routed, f"not routed by the Ingress: {public - routed}"
    assert "/metrics" not in routed and "/" not in paths


def test_rollout_migrates_first_and_stops_on_a_failed_migration(tmp_path: Path) -> None:
    """deploy/k8s/rollout.sh against a fake kubectl that records what it is asked."""
    log = tmp_path / "kubectl.log"
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {log}\n'
        'if [[ "$1" == apply ]]; then grep -E "^kind:|image:" >> ' + str(log) + "; fi\n"
        'if [[ "$1" == get ]]; then echo "$JOB_STATE"; fi\n'
    )
    kubectl.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "REGISTRY": "reg.test/acme"}
    script = str(K8S / "rollout.sh")
    done = subprocess.run(
        [script, "--gpu"], env={**env, "JOB_STATE": "Complete"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    calls = log.read_text()
    job = "tollgate-migrate-" + VERSION.replace(".", "-")
    order = [calls.index(s) for s in (
        "kind: Job", f"get job/{job}", "kind: Deployment", "rollout status deployment/tollgate ",
        "rollout status deployment/tollgate-gpu",
    )]  # fmt: skip
    assert order == sorted(order)
    assert f"image: reg.test/acme/tollgate:{VERSION}" in calls
    assert "registry.example.com" not in calls
    log.unlink()
    failed = subprocess.run(
        [script], env={**env, "JOB_STATE": "Failed"}, capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert "migration failed" in failed.stderr
    assert "kind: Deployment" not in log.read_text()  # nothing rolled
