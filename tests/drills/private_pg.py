"""A private Postgres cluster for drills that stop the database: ``initdb`` + ``pg_ctl`` from
the machine's Postgres binaries, on a temporary folder and a free loopback port, trust
authentication over TCP. The suite never stops, restarts or reconfigures the Postgres it
was given; what a drill stops is its own cluster.

initdb refuses to run as root, so as root the cluster runs as the ``postgres`` OS user
(``runuser``), in a temporary folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OWNER = "postgres"  # the OS user that runs the cluster when we are root


def _version(bin_dir: str) -> tuple[int, ...]:
    found = re.search(r"/postgresql/([\d.]+)/", bin_dir)
    return tuple(int(p) for p in found.group(1).split(".")) if found else ()


def find_binaries() -> Path | None:
    """The newest ``bin`` folder holding initdb and pg_ctl (Debian's layout), else PATH."""
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if all(os.access(Path(bin_dir, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(bin_dir)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def unavailable() -> str | None:
    """Why a private cluster cannot run here (a skip reason), or None."""
    if find_binaries() is None:
        return (
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin "
            "or on PATH: install the postgresql package to run this drill"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OWNER)
        except KeyError:
            return f"running as root, and initdb refuses root: no '{OWNER}' user to run as"
        if shutil.which("runuser") is None:
            return f"running as root, and initdb refuses root: no runuser to become '{OWNER}'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """One initialized cluster; :meth:`stop` and :meth:`start` are the drill's levers."""

    def __init__(self, bin_dir: Path, base: Path) -> None:
        self.bin_dir = bin_dir
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self.port = _free_port()
        self._as_owner = ["runuser", "-u", OWNER, "--"] if os.geteuid() == 0 else []

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as_owner, str(self.bin_dir / tool), *args],
            cwd=self.base,  # a folder the owner can enter
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # pg_ctl start leaves the server holding no pipe
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {args[0]} failed: {result.stderr.decode()}\n{log}")

    def init(self) -> None:
        self._run(
            "initdb",
            "--pgdata", str(self.data),
            "--username", "postgres",
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", "60", "-o", options)  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")

    def is_up(self) -> bool:
        status = subprocess.run(
            [*self._as_owner, str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data)],
            cwd=self.base,
            capture_output=True,
            timeout=30,
            check=False,
        )
        return status.returncode == 0


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started cluster for the ``with`` block; stopped and deleted afterwards."""
    bin_dir = find_binaries()
    assert bin_dir is not None, unavailable()
    base = Path(tempfile.mkdtemp(prefix="tollgate-pg-"))  # short: the socket lives here
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OWNER)
        os.chown(base, owner.pw_uid, owner.pw_gid)
    cluster = PrivateCluster(bin_dir, base)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.is_up():
            cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
