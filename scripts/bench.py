"""``make bench``: bounded loopback load, Tollgate (auth + metering on Postgres) against a bare
FastAPI endpoint serving the same model, measured side by side in one run.

Each server runs alone, pinned to CPU 0 (uvicorn, one process); wrk runs pinned to CPU 1.
Rounds alternate bare/Tollgate so that machine noise hits both. Results are printed as a
Markdown table and written to var/bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from models.data import diabetes_split, digits_split
from scripts.harness import Server, migrate_and_create_key
from scripts.loadgen import v2_binary_body

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("TOLLGATE_BENCH_PG", "postgres@127.0.0.1:5432")
# Its own database name per run if set, so two benches on one Postgres do not drop each other's.
BENCH_DB = os.environ.get("TOLLGATE_BENCH_DB", "tollgate_bench")
SECRET = "bench-secret-0123456789abcdef"  # noqa: S105 - a throwaway bench database


@dataclass
class Result:
    scenario: str
    server: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    items: int = 1
    # Tollgate only: the ledger's commit round trip during the run (the server's own
    # tollgate_meter_commit_seconds), which every 200 waits for: the machine's fsync shows here.
    commit_ms: float | None = None
    rows_per_commit: float | None = None


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not m:
        raise ValueError(value)
    return float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m[2]]


def cload() -> Path:
    """``scripts/cload.c`` built into var/bench: the load generator where ``wrk`` is absent
    (same model: one thread, closed loop, keep-alive, latency from send to last byte)."""
    binary = ROOT / "var" / "bench" / "cload"
    source = ROOT / "scripts" / "cload.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def run_cload(
    url: str, body: bytes, headers: dict[str, str], conns: int, seconds: int
) -> dict[str, float]:
    m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/.*)", url)
    if not m:
        raise ValueError(url)
    head = [f"POST {m[2]} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    with tempfile.TemporaryDirectory() as tmp:
        request = Path(tmp) / "request"
        request.write_bytes(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        cmd = ["taskset", "-c", "1", str(cload()), m[1], str(conns), str(seconds), str(request)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    values = dict(zip(out[::2], out[1::2], strict=True))
    return {
        "rps": float(values["rps"]),
        "p50": float(values["p50_us"]) / 1e3,
        "p99": float(values["p99_us"]) / 1e3,
        "requests": int(values["requests"]),
        "non_2xx": int(values["non2xx"]),
    }


def run_wrk(
    url: str, body: bytes, headers: dict[str, str], conns: int, seconds: int
) -> dict[str, float]:
    if shutil.which("wrk") is None:
        return run_cload(url, body, headers, conns, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body.json").write_bytes(body)
        lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        lines.append(
            f'local f = io.open("{tmp}/body.json", "rb"); wrk.body = f:read("*a"); f:close()'
        )
        script = Path(tmp) / "post.lua"
        script.write_text("\n".join(lines) + "\n")
        cmd = [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "requests": total,
        "non_2xx": int(bad[1]) if bad else 0,
    }


def meter_totals(metrics_url: str) -> tuple[float, float, float]:
    """(commit seconds, commits, rows) so far, from the server's Prometheus text."""
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=5) as r:  # noqa: S310 - loopback only
        text = r.read().decode()

    def value(name: str) -> float:
        m = re.search(rf"^{name} ([\d.e+-]+)$", text, re.M)
        return float(m[1]) if m else 0.0

    return (
        value("tollgate_meter_commit_seconds_sum"),
        value("tollgate_meter_commit_seconds_count"),
        value("tollgate_meter_batch_size_sum"),
    )


def prepare_db() -> str:
    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return f"postgresql://{PG}/{BENCH_DB}"


def ledger_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM usage_events WHERE billable").fetchone()[0])  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--only",
        default="",
        help="Comma-separated scenario name prefixes to run (e.g. 'S1,S2'); default: all.",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None and shutil.which("cc") is None:
        sys.exit("wrk (apt-get install -y wrk) or a C compiler for scripts/cload.c is needed")

    db_url = prepare_db()
    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": db_url,
        "TOLLGATE_SECRET_KEY": SECRET,
        "TOLLGATE_ENV": "production",
        "TOLLGATE_DEVICE": "cpu",
        "PYTHONUNBUFFERED": "1",
    }
    tollgate = [sys.executable, "-m", "app.cli"]
    key = migrate_and_create_key(env, "bench")

    _, digits = digits_split()
    _, diabetes = diabetes_split()
    auth = {"Authorization": f"Bearer {key}"}
    image = json.dumps({"inputs": digits.x[0].tolist()}).encode()
    images32 = json.dumps({"inputs": digits.x[:32].tolist()}).encode()
    binary32, binary_headers = v2_binary_body(digits.x[:32].numpy())
    bare = "http://127.0.0.1:8101/predict/{model}"
    v1 = "http://127.0.0.1:8102/v1/models/{model}/predict"
    v2 = "http://127.0.0.1:8102/v2/models/{model}/infer"
    # scenario, model, url, body, headers, connections, items per request
    on_bare = [
        Scenario(
            "S1 linreg 1 row/req c16",
            "linreg",
            bare,
            json.dumps({"inputs": diabetes.x[0].tolist()}).encode(),
            {},
            16,
            1,
        ),
        Scenario("S2 cnn 1 image/req c16", "cnn", bare, image, {}, 16, 1),
        Scenario("S3 cnn 32 images/req c4, JSON", "cnn", bare, images32, {}, 4, 32),
        Scenario("S4 cnn 1 image/req c1", "cnn", bare, image, {}, 1, 1),
    ]
    on_tollgate = [
        Scenario(
            "S1 linreg 1 row/req c16",
            "linreg",
            v1,
            json.dumps({"inputs": diabetes.x[0].tolist()}).encode(),
            auth,
            16,
            1,
        ),
        Scenario("S2 cnn 1 image/req c16", "cnn", v1, image, auth, 16, 1),
        Scenario("S3 cnn 32 images/req c4, JSON", "cnn", v1, images32, auth, 4, 32),
        Scenario(
            "S3 cnn 32 images/req c4, binary (V2)",
            "cnn",
            v2,
            binary32,
            {**auth, **binary_headers},
            4,
            32,
        ),
        Scenario("S4 cnn 1 image/req c1", "cnn", v1, image, auth, 1, 1),
        Scenario("S5 cnn 1 image/req c64", "cnn", v1, image, auth, 64, 1),
    ]
    on_tollgate += [
        Scenario(
            f"variant {variant} 32 images/req c4, binary (V2)",
            f"cnn:{variant}",
            v2,
            binary32,
            {**auth, **binary_headers},
            4,
            32,
        )
        for variant in available_variants()
    ]
    # S3's JSON cost against cheaper forwards: the binary/JSON ratio is bounded by
    # (forward + JSON decode) / forward, so it shows best where the forward is cheap.
    on_tollgate += [
        Scenario(
            f"S3 cnn:{variant} 32 images/req c4, JSON", f"cnn:{variant}", v1, images32, auth, 4, 32
        )
        for variant in ("int8", "distilled")
        if variant in available_variants()
    ]
    if args.only:
        wanted = tuple(p.strip() for p in args.only.split(",") if p.strip())
        on_bare = [s for s in on_bare if s.name.startswith(wanted)]
        on_tollgate = [s for s in on_tollgate if s.name.startswith(wanted)]
    nobatch = [s for s in on_tollgate if s.name.startswith("S5")]
    servers = [
        (
            "bare",
            Server(
                [sys.executable, "-m", "scripts.bare_server", "--port", "8101"],
                env,
                "http://127.0.0.1:8101/healthz",
                cpus="0",
            ),
            on_bare,
        ),
        (
            "bare script",  # the same CPU graph Tollgate serves: the request path alone
            Server(
                [
                    sys.executable,
                    "-m",
                    "scripts.bare_server",
                    "--port",
                    "8101",
                    "--graph",
                    "script",
                ],
                env,
                "http://127.0.0.1:8101/healthz",
                cpus="0",
            ),
            on_bare,
        ),
        (
            "tollgate",
            Server(
                [*tollgate, "serve", "--port", "8102"],
                env,
                "http://127.0.0.1:8102/readyz",
                cpus="0",
            ),
            on_tollgate,
        ),
        (
            "tollgate batching off",
            Server(
                [*tollgate, "serve", "--port", "8102"],
                {**env, "TOLLGATE_BATCH_MAX_ITEMS": "1"},
                "http://127.0.0.1:8102/readyz",
                cpus="0",
            ),
            nobatch,
        ),
    ]
    results: list[Result] = []
    served = 0
    for rnd in range(args.rounds):
        for server_name, server, scenarios in servers:
            if not scenarios:
                continue
            with server:
                for sc in scenarios:
                    target = sc.url.format(model=sc.model)
                    warm = run_wrk(target, sc.body, sc.headers, sc.connections, 2)
                    is_tollgate = server_name.startswith("tollgate")
                    metrics = "http://127.0.0.1:8102/metrics"
                    before = meter_totals(metrics) if is_tollgate else None
                    r = run_wrk(target, sc.body, sc.headers, sc.connections, args.seconds)
                    commit_ms = rows_per_commit = None
                    if before is not None:
                        after = meter_totals(metrics)
                        seconds, commits, rows = (a - b for a, b in zip(after, before, strict=True))
                        if commits:
                            commit_ms, rows_per_commit = 1e3 * seconds / commits, rows / commits
                    if is_tollgate:
                        served += int(warm["requests"] - warm["non_2xx"])
                        served += int(r["requests"] - r["non_2xx"])
                    results.append(
                        Result(
                            sc.name,
                            server_name,
                            rnd,
                            r["rps"],
                            r["p50"],
                            r["p99"],
                            int(r["requests"]),
                            int(r["non_2xx"]),
                            sc.items,
                            commit_ms,
                            rows_per_commit,
                        )
                    )
                    ledger = (
                        f" commit {commit_ms:5.2f} ms ({rows_per_commit:.1f} rows)"
                        if commit_ms is not None and rows_per_commit is not None
                        else ""
                    )
                    print(
                        f"round {rnd} {server_name:22} {sc.name:42} {r['rps']:8.0f} req/s "
                        f"{r['rps'] * sc.items:9.0f} items/s p50 {r['p50']:6.2f} ms "
                        f"p99 {r['p99']:6.2f} ms non-2xx {r['non_2xx']}{ledger}",
                        flush=True,
                    )

    rows = ledger_rows(db_url)
    report = render(results, args, rows, served)
    print(report)
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (out / "report.md").write_text(report)


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    url: str
    body: bytes
    headers: dict[str, str]
    connections: int
    items: int


def available_variants() -> list[str]:
    """Shipped cnn variants that run on this machine (fp16 needs CUDA)."""
    import torch

    from models.manifest import discover

    out = []
    for _, manifest in discover(ROOT / "models"):
        variant = getattr(manifest, "variant", None)
        if manifest.name != "cnn" or variant is None:
            continue
        if getattr(manifest, "requires_device", None) == "cuda" and not torch.cuda.is_available():
            continue
        out.append(variant)
    return out


def render(results: list[Result], args: argparse.Namespace, rows: int, served: int) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )

    def med(scenario: str, server: str, field: str) -> float | None:
        values = [
            getattr(r, field) for r in results if r.scenario == scenario and r.server == server
        ]
        return statistics.median(values) if values else None

    def items_s(scenario: str, server: str) -> float | None:
        rps = med(scenario, server, "rps")
        items = next((r.items for r in results if r.scenario == scenario), 1)
        return None if rps is None else rps * items

    client = "wrk" if shutil.which("wrk") else "cload"
    lines = [
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; "
        f"server pinned to CPU 0, {client} (-t1 -d{args.seconds}s) on CPU 1; "
        f"{args.rounds} alternating rounds, median shown.",
        "",
        "Bare: a plain FastAPI endpoint, eager torch. Bare script: the same endpoint running "
        "the CPU graph Tollgate serves (app/catalog/graph.py), isolating the request path.",
        "",
        "| scenario | bare items/s | bare script items/s | Tollgate items/s | ratio vs bare "
        "| ratio vs bare script | bare p50 / p99 ms | bare script p50 / p99 ms "
        "| Tollgate p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def lat(scenario: str, server: str) -> str:
        p50, p99 = med(scenario, server, "p50_ms"), med(scenario, server, "p99_ms")
        return "n/a" if p50 is None or p99 is None else f"{p50:.2f} / {p99:.2f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or not b else f"{a / b:.2f}x"

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f}"

    for scenario in dict.fromkeys(r.scenario for r in results if r.server.startswith("bare")):
        bare, same = items_s(scenario, "bare"), items_s(scenario, "bare script")
        toll = items_s(scenario, "tollgate")
        lines.append(
            f"| {scenario} | {num(bare)} | {num(same)} | {num(toll)} | {ratio(toll, bare)} "
            f"| {ratio(toll, same)} | {lat(scenario, 'bare')} | {lat(scenario, 'bare script')} "
            f"| {lat(scenario, 'tollgate')} |"
        )
    json3 = items_s("S3 cnn 32 images/req c4, JSON", "tollgate")
    bin3 = items_s("S3 cnn 32 images/req c4, binary (V2)", "tollgate")
    if json3 and bin3:
        lines += [
            "",
            f"S3 Tollgate: JSON {json3:,.0f} items/s, binary {bin3:,.0f} items/s: "
            f"binary/JSON = {bin3 / json3:.2f}x",
        ]
    on = items_s("S5 cnn 1 image/req c64", "tollgate")
    off = items_s("S5 cnn 1 image/req c64", "tollgate batching off")
    if on and off:
        lines += [
            "",
            f"S5 (64 connections): batching on {on:,.0f} items/s, off {off:,.0f} "
            f"items/s: on/off = {on / off:.2f}x",
        ]
    variants = [r.scenario for r in results if r.scenario.startswith("variant")]
    if variants:
        lines += [
            "",
            "| variant (through Tollgate, binary V2, 32 images/req, c4) | items/s |",
            "|---|---|",
        ]
        if bin3:
            lines.append(f"| cnn (fp32) | {bin3:,.0f} |")
        for scenario in dict.fromkeys(variants):
            lines.append(f"| {scenario.split()[1]} | {items_s(scenario, 'tollgate'):,.0f} |")
    for variant in ("int8", "distilled"):
        json_v = items_s(f"S3 cnn:{variant} 32 images/req c4, JSON", "tollgate")
        bin_v = items_s(f"variant {variant} 32 images/req c4, binary (V2)", "tollgate")
        if json_v and bin_v:
            lines += [
                "",
                f"S3 on cnn:{variant}: JSON {json_v:,.0f} items/s, binary {bin_v:,.0f} "
                f"items/s: binary/JSON = {bin_v / json_v:.2f}x",
            ]
    commits = [
        (r.scenario, r.round, r.commit_ms, r.rows_per_commit)
        for r in results
        if r.server == "tollgate" and r.commit_ms is not None
    ]
    if commits:
        lines += [
            "",
            "Ledger commit round trip during each Tollgate run (tollgate_meter_commit_seconds: "
            "every 200 waits for one): "
            + "; ".join(f"{s} round {n}: {ms:.2f} ms, {k:.1f} rows" for s, n, ms, k in commits),
        ]
    lines += [
        "",
        f"Ledger check: {rows:,} billable usage rows for {served:,} 2xx responses "
        "counted by wrk, warm-ups included (rows ≥ responses: requests still in flight "
        "when wrk stops are metered but not counted).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
