"""A small closed-loop HTTP/1.1 load generator, for machines without ``wrk`` (the GPU box).

``connections`` keep-alive connections each send the same request back to back for
``seconds``; they are spread over ``processes`` worker processes so that the client is not
the bottleneck. Latencies are per request (send to last body byte). Also holds the request
bodies the benchmarks share.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Load:
    requests: int
    non_2xx: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def http_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    if not any(k.lower() == "content-type" for k in headers):
        lines.append("Content-Type: application/json")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _connection(
    port: int, request: bytes, until: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - sent)
            if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
                errors.append(int(head[9:12]))
    finally:
        writer.close()


def _worker(args: tuple[int, bytes, int, float]) -> tuple[list[float], int]:
    port, request, connections, seconds = args

    async def main() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors: list[int] = []
        until = time.perf_counter() + seconds
        await asyncio.gather(
            *(_connection(port, request, until, latencies, errors) for _ in range(connections))
        )
        return latencies, len(errors)

    return asyncio.run(main())


def run_load(
    port: int, request: bytes, connections: int, seconds: float, processes: int = 4
) -> Load:
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_worker, [(port, request, n, seconds) for n in shares])
    latencies = sorted(x for part, _ in parts for x in part)
    non_2xx = sum(errors for _, errors in parts)
    if not latencies:
        return Load(0, non_2xx, seconds, float("nan"), float("nan"))
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    # Each worker sends for ``seconds`` on its own clock (process start-up is not counted).
    return Load(len(latencies), non_2xx, seconds, statistics.median(latencies) * 1e3, p99 * 1e3)


def v2_binary_body(batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """An Open Inference Protocol request with the binary tensor extension, as V2 clients
    send by default: a JSON header, then the raw little-endian float32 bytes."""
    raw = np.ascontiguousarray(batch, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": list(batch.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}
