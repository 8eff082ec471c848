"""What the benchmarks share: starting a server and waiting for it, and a ledger with a key."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback only
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not become ready")


class Server:
    """A server process for the duration of a ``with`` block, pinned to ``cpus`` if given."""

    def __init__(
        self, cmd: list[str], env: dict[str, str], health: str, cpus: str | None = None
    ) -> None:
        self.cmd, self.env, self.health, self.cpus = cmd, env, health, cpus
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        self.proc = subprocess.Popen(
            [*pin, *self.cmd],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_ready(self.health, timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=60)


def migrate_and_create_key(env: dict[str, str], customer: str) -> str:
    """Build the ledger named by ``env`` with the CLI and return a new predict key for a new
    customer."""
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, cwd=ROOT)
    created = subprocess.run(
        [*cli, "keys", "create", "--customer", customer],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return created.stdout.strip().splitlines()[-1]
