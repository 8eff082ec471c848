"""GPU benchmark for the device machine: Tollgate's items/s against the in-process ceiling.

Runs where ``wrk`` and Postgres are absent (the lent GPU box): the ledger is SQLite, the load
comes from :mod:`scripts.loadgen`. For each model (``cnn`` fp32 and ``cnn:fp16``):

* **ceiling**: the served predictor's own forward (``Predictor.predict``: host-to-device copy,
  forward, device-to-host copy) in process, batch 1, 32 and 64, items/s;
* **Tollgate**: S2 (1 image/request, 16 connections, JSON), S3 (32 images/request, 4
  connections, JSON and binary V2), S5 (1 image/request, 64 connections) with batching on,
  and S5 with batching off (``TOLLGATE_BATCH_MAX_ITEMS=1``), each as items/s and as a
  fraction of the ceiling at the batch size that scenario can reach.

``python -m scripts.bench_gpu --device cuda --seconds 5 --out var/bench/gpu`` (writes
``results.json`` and ``report.md``); ``--device cpu`` runs the same steps here as a dry run.
How to send it to the device machine with the wheels it lacks: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.catalog.service import shipped_snapshot
from app.catalog.store import DirectoryStore
from app.config import Settings, shipped_models_dir
from app.inference.registry import ModelRegistry
from app.observability.metrics import Metrics
from models.data import digits_split
from scripts.harness import ROOT, Server, migrate_and_create_key
from scripts.loadgen import Load, http_request, run_load, v2_binary_body

SECRET = "gpu-bench-secret-0123456789abcdef"  # noqa: S105 - a throwaway SQLite ledger
PORT = 8103
V1 = "/v1/models/{m}/predict"
V2 = "/v2/models/{m}/infer"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str  # with {m} for the model
    body: bytes
    headers: dict[str, str]
    connections: int
    items: int  # per request
    reach: int  # the batch size the server can form: the ceiling to compare with


def ceiling(device: str, refs: list[str], seconds: float) -> dict[str, dict[int, float]]:
    """Items/s of each model's served predictor, in process, per batch size, with the torch
    thread count the server uses."""
    torch.set_num_threads(Settings().torch_threads)
    models = shipped_models_dir()
    store = DirectoryStore(Path(tempfile.mkdtemp(prefix="tollgate-gpu-store-")), models)
    registry = ModelRegistry(store, Metrics(), device=device, max_batch_items=64, threads=1)
    registry.apply_now(shipped_snapshot(models))
    _, test = digits_split()
    out: dict[str, dict[int, float]] = {}
    for ref in refs:
        predictor = registry.find(ref).predictor
        assert predictor is not None
        out[ref] = {}
        for batch_size in (1, 32, 64):
            batch = test.x[:batch_size].numpy()
            for _ in range(5):
                predictor.predict(batch)
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                predictor.predict(batch)  # ends in a device-to-host copy: synchronous
                calls += 1
            out[ref][batch_size] = batch_size * calls / (time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "gpu")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here; use --device cpu for a dry run")
    refs = ["cnn", "cnn:fp16"] if args.device == "cuda" else ["cnn"]
    args.out.mkdir(parents=True, exist_ok=True)

    print("ceiling (in-process predictor)...", flush=True)
    ceil = ceiling(args.device, refs, min(args.seconds, 3.0))

    db = Path(tempfile.mkdtemp(prefix="tollgate-gpu-bench-")) / "ledger.db"
    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "TOLLGATE_SECRET_KEY": SECRET,
        "TOLLGATE_ENV": "production",
        "TOLLGATE_ALLOW_SQLITE": "true",  # a throwaway ledger file
        "TOLLGATE_DEVICE": args.device,
        "TOLLGATE_LOG_LEVEL": "INFO",
    }
    key = migrate_and_create_key(env, "gpu-bench")
    serve = [sys.executable, "-m", "app.cli", "serve", "--port", str(PORT)]
    auth = {"Authorization": f"Bearer {key}"}
    _, test = digits_split()
    one = json.dumps({"inputs": test.x[0].tolist()}).encode()
    many = json.dumps({"inputs": test.x[:32].tolist()}).encode()
    binary, binary_headers = v2_binary_body(test.x[:32].numpy())

    scenarios = [
        Scenario("S2 1 image/req c16 JSON", V1, one, auth, 16, 1, 32),
        Scenario("S3 32 images/req c4 JSON", V1, many, auth, 4, 32, 64),
        Scenario("S3 32 images/req c4 binary", V2, binary, {**auth, **binary_headers}, 4, 32, 64),
        Scenario("S5 1 image/req c64 batching on", V1, one, auth, 64, 1, 64),
    ]
    # Batching off: one item per forward, so the ceiling to compare with is batch 1.
    off = Scenario("S5 1 image/req c64 batching off", V1, one, auth, 64, 1, 1)
    rows: list[dict[str, Any]] = []

    def measure(sc: Scenario, ref: str) -> None:
        request = http_request(sc.path.format(m=ref), sc.body, sc.headers)
        run_load(PORT, request, sc.connections, 1.0)  # warm-up
        load: Load = run_load(PORT, request, sc.connections, args.seconds)
        items_s = load.rps * sc.items
        row = {
            "model": ref,
            "scenario": sc.name,
            "items_per_s": round(items_s, 1),
            "ceiling_items_per_s": round(ceil[ref][sc.reach], 1),
            "fraction_of_ceiling": round(items_s / ceil[ref][sc.reach], 3),
            "p50_ms": round(load.p50_ms, 2),
            "p99_ms": round(load.p99_ms, 2),
            "requests": load.requests,
            "non_2xx": load.non_2xx,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    health = f"http://127.0.0.1:{PORT}/readyz"
    with Server(serve, env, health):
        for ref in refs:
            for sc in scenarios:
                measure(sc, ref)
    with Server(serve, {**env, "TOLLGATE_BATCH_MAX_ITEMS": "1"}, health):
        for ref in refs:
            measure(off, ref)

    env_info = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else _cpu_name(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "ledger": "SQLite (no Postgres on the device machine)",
        "seconds": args.seconds,
    }
    results = {
        "env": env_info,
        "ceiling": {ref: {str(b): round(v, 1) for b, v in c.items()} for ref, c in ceil.items()},
        "rows": rows,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "report.md").write_text(report(results))
    print(report(results))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def report(results: dict[str, Any]) -> str:
    env = results["env"]
    lines = [
        f"Device: {env['device']}, torch {env['torch']}, Python {env['python']}, "
        f"{env['cpus']} CPUs; ledger: {env['ledger']}; {env['seconds']} s per scenario.",
        "",
        "| model | ceiling items/s (batch 1 / 32 / 64) |",
        "|---|---|",
    ]
    for ref, per_batch in results["ceiling"].items():
        lines.append(f"| {ref} | {' / '.join(f'{v:,.0f}' for v in per_batch.values())} |")
    lines += [
        "",
        "| model | scenario | items/s | of ceiling | p50 / p99 ms | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} | {r['scenario']} | {r['items_per_s']:,.0f} | "
            f"{r['fraction_of_ceiling']:.0%} | {r['p50_ms']} / {r['p99_ms']} | {r['non_2xx']} |"
        )
    by = {(r["model"], r["scenario"]): r["items_per_s"] for r in results["rows"]}
    for ref in results["ceiling"]:
        on = by.get((ref, "S5 1 image/req c64 batching on"))
        off = by.get((ref, "S5 1 image/req c64 batching off"))
        js = by.get((ref, "S3 32 images/req c4 JSON"))
        binary = by.get((ref, "S3 32 images/req c4 binary"))
        if on and off:
            lines.append(f"\n{ref}: S5 batching on/off = {on / off:.2f}x")
        if js and binary:
            lines.append(f"{ref}: S3 binary/JSON = {binary / js:.2f}x")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
