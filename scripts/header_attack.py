"""The header attack, measured: one request whose header never ends (up to 1 GiB), sent to
``tollgate serve`` (guarded, app/server.py) and to plain uvicorn serving the same app
(``--unguarded``), with the server's resident memory sampled throughout.

    python -m scripts.header_attack [--gib 1] [--unguarded]

Prints one JSON line: bytes the server accepted before it answered or closed, its answer's
status line, RSS before and peak during the attack (MiB). Loopback only; bounded in bytes
and time (60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from scripts.harness import Server, migrate_and_create_key


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--unguarded", action="store_true", help="plain uvicorn httptools")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="tollgate-attack-")
    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/attack.db",
        "TOLLGATE_DEVICE": "cpu",
        "TOLLGATE_LOG_LEVEL": "WARNING",
    }
    migrate_and_create_key(env, "attack")
    if args.unguarded:
        cmd = [
            sys.executable, "-m", "uvicorn", "--factory", "app.main:app_factory",
            "--http", "httptools", "--port", str(args.port), "--no-access-log",
        ]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(args.port)]
    total = int(args.gib * 2**30)
    with Server(cmd, env, f"http://127.0.0.1:{args.port}/readyz") as server:
        assert server.proc is not None
        pid = server.proc.pid  # one worker: uvicorn serves in this process
        before = _rss_mib(pid)
        peak = before
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss_mib(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent = 0
        answer = b""
        deadline = time.monotonic() + 60
        chunk = b"a" * (1 << 20)
        with socket.create_connection(("127.0.0.1", args.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: attack\r\nX-Attack: ")
            try:
                while sent < total and time.monotonic() < deadline:
                    sock.sendall(chunk)
                    sent += len(chunk)
                sock.sendall(b"\r\n\r\n")
            except OSError:
                pass
            try:
                answer = sock.recv(4096)
            except OSError as exc:
                answer = f"<{type(exc).__name__}>".encode()
        time.sleep(0.5)
        done.set()
        sampler.join()
        print(
            json.dumps(
                {
                    "server": "uvicorn httptools (unguarded)" if args.unguarded else "tollgate",
                    "client_sent_mib": round(sent / 2**20, 1),
                    "answer": answer.split(b"\r\n", 1)[0].decode("latin-1"),
                    "rss_before_mib": round(before, 1),
                    "rss_peak_mib": round(peak, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
