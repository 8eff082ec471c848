"""The suite never touches the lifecycle of the Postgres and Redis it was given: no test or
script it runs stops, restarts or reconfigures them (a drill that stops a database stops its
own private cluster, tests/drills/private_pg.py)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.paths import REPO_ROOT

THIS = "tests/test_shared_services.py"
# Ways to stop, restart or reconfigure a shared server.
LIFECYCLE = re.compile(
    r"pg_ctlcluster|pg_ctl\s.*-D\s*/var/lib/postgresql|systemctl|\bservice\s+(postgresql|redis)"
    r"|\bpg_reload_conf\b|\bALTER\s+SYSTEM\b"
    r"|redis-cli\b.*\b(shutdown|config|flushall)\b|\bCONFIG\s+SET\b|\.config_set\("
    r"|\bFLUSHALL\b|\.flushall\(|\.shutdown\(\s*(save|nosave|now)",
    re.IGNORECASE,
)


def _hits(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if LIFECYCLE.search(line)]


def test_the_scanner_sees_each_lifecycle_command() -> None:
    for line in (
        'subprocess.run(["pg_ctlcluster", "15", "main", "stop"])',
        "systemctl restart redis-server",
        "redis-cli -p 6379 shutdown nosave",
        'await redis.config_set("maxmemory", "1mb")',
        "conn.execute(text('ALTER SYSTEM SET max_connections = 5'))",
        "await client.flushall()",
    ):
        assert _hits(line), line
    assert not _hits("server.shutdown()  # the stand-in's own HTTP server")
    assert not _hits("cluster.stop()  # the private cluster")


def test_no_test_or_script_touches_a_shared_service() -> None:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", "tests", "scripts", "Makefile"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (git ls-files lists the tracked files)")
    found: list[str] = []
    for name in filter(None, listed.split("\0")):
        path = REPO_ROOT / name
        if name == THIS or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {hit}" for hit in _hits(text)]
    assert found == [], "\n".join(found)
