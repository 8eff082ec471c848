"""The wheel is self-contained: built from the repository and installed (not editable) into a
fresh virtual environment, ``tollgate`` migrates, creates a key and serves from an empty
directory, on SQLite and on Postgres, with no source tree in sight.

The fresh environment gets the wheel only; its third-party dependencies (torch, FastAPI, ...)
come from the running interpreter's site-packages through a ``.pth`` line, so the test does
not download or reinstall them. A path added by a ``.pth`` line has its own ``.pth`` files
ignored, so the development environment's editable ``tollgate`` cannot leak in (asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from app.db.migrate import script_location
from tests.conftest import alembic_config
from tests.paths import REPO_ROOT

# What a wheel is built from: the project file and the packages it ships.
SOURCES = ("pyproject.toml", "README.md", "app", "models", "migrations")
ROW = {"inputs": [0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.00, 0.02, -0.02]}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    site_packages: Path

    @property
    def tollgate(self) -> str:
        return str(self.venv / "bin" / "tollgate")


def _run(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    pytest.importorskip("ensurepip", reason="python -m venv needs ensurepip to install pip")
    pytest.importorskip("setuptools", reason="the wheel is built without build isolation")
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"  # a copy, so the build writes nothing into the repository
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    dist = root / "dist"
    pip_quiet = ["--quiet", "--disable-pip-version-check", "--no-index", "--no-deps"]
    _run([sys.executable, "-m", "pip", "wheel", *pip_quiet, "--no-build-isolation",
          "--wheel-dir", str(dist), str(source)])  # fmt: skip
    (wheel,) = dist.glob("tollgate-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    # The wheel alone, before the dependencies become visible: pip sees no other tollgate.
    _run([python, "-m", "pip", "install", *pip_quiet, str(wheel)])
    site_packages = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    ours = sysconfig.get_paths()  # this interpreter's, from its sys.prefix
    deps = dict.fromkeys([ours["purelib"], ours["platlib"]])
    (site_packages / "zz_tollgate_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    return Installed(wheel=wheel, venv=venv, site_packages=site_packages)


def _user_env(**settings: str) -> dict[str, str]:
    """The environment of a user with nothing of this checkout set."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOLLGATE_")
        and k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR"}
    }
    return {**env, **settings}


def test_the_wheel_carries_models_and_migrations(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for manifest in (REPO_ROOT / "models").glob("*/*/manifest.json"):
        shipped = manifest.relative_to(REPO_ROOT).as_posix()
        assert shipped in names
        # the server loads only the TorchScript archive; training's weights.pt stays behind
        archive = json.loads(manifest.read_text(encoding="utf-8"))["archive"]["file"]
        assert shipped.replace("manifest.json", archive) in names
        assert shipped.replace("manifest.json", "weights.pt") not in names
    for script in (REPO_ROOT / "migrations" / "versions").glob("*.py"):
        assert script.relative_to(REPO_ROOT).as_posix() in names
    assert {"migrations/env.py", "migrations/script.py.mako", "app/db/migrate.py"} <= names
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)


def test_the_wheel_carries_the_consoles_templates_and_assets(installed: Installed) -> None:
    """The console and /docs are served from the package: every template and static file
    (the vendored htmx, Chart.js, Pico and Swagger UI included), none left to a CDN."""
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    console = REPO_ROOT / "app" / "console"
    shipped = [
        path.relative_to(REPO_ROOT).as_posix()
        for folder in ("templates", "static")
        for path in (console / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert "app/console/static/vendor/swagger-ui-bundle.js" in shipped
    assert "app/console/templates/docs.html" in shipped
    assert [name for name in shipped if name not in names] == []


def test_the_developer_alembic_ini_and_the_app_use_the_same_migrations() -> None:
    """``alembic`` from the checkout (alembic.ini) and ``tollgate migrate`` (app.db.migrate)
    run the same scripts: in a checkout, the package is the top-level folder."""
    ini = Config(str(REPO_ROOT / "alembic.ini"))
    assert Path(ini.get_main_option("script_location") or "") == REPO_ROOT / "migrations"
    assert script_location() == REPO_ROOT / "migrations"


def test_the_installed_packages_are_the_wheels(installed: Installed, tmp_path: Path) -> None:
    where = _run(
        [str(installed.venv / "bin" / "python"), "-c",
         "import app, migrations, models; from app.config import Settings; "
         "print(app.__file__); print(migrations.__file__); print(models.__file__); "
         "print(Settings().models_dir)"],
        cwd=tmp_path, env=_user_env(),
    ).stdout.split()  # fmt: skip
    assert len(where) == 4, where
    for path in where:
        assert Path(path).is_relative_to(installed.site_packages), where


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _migrate_and_create_key(installed: Installed, cwd: Path, env: dict[str, str]) -> str:
    migrated = _run([installed.tollgate, "migrate"], cwd=cwd, env=env)
    assert "database migrated to head" in migrated.stdout
    created = _run([installed.tollgate, "keys", "create", "--customer", "x"], cwd=cwd, env=env)
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tg_"), created.stdout
    return key


def test_installed_wheel_migrates_creates_a_key_and_serves_on_sqlite(
    installed: Installed, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _user_env()  # the defaults: SQLite under ./var, development secret
    key = _migrate_and_create_key(installed, empty, env)
    assert (empty / "var" / "tollgate.db").is_file()  # beside the user, not the package

    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [installed.tollgate, "serve", "--port", str(port)],
        cwd=empty,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = False
        deadline = time.monotonic() + 180  # a bound on a hung start, not a timing target
        while not ready and time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ready, (tmp_path / "serve.log").read_text()[-3000:]
        r = httpx.post(
            f"{url}/v1/models/linreg/predict",
            json=ROW,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["outputs"]) == 1
        unauthenticated = httpx.post(f"{url}/v1/models/linreg/predict", json=ROW, timeout=30)
        assert unauthenticated.status_code == 401
        # The console and /docs render from the installed package's templates and files.
        for path in ("/console/login", "/docs", "/console/static/vendor/swagger-ui-bundle.js"):
            assert httpx.get(f"{url}{path}", timeout=30).status_code == 200, path
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        log.close()


def test_installed_wheel_migrates_and_creates_a_key_on_postgres(
    installed: Installed, scratch_pg: str, tmp_path: Path
) -> None:
    env = _user_env(TOLLGATE_DATABASE_URL=scratch_pg)
    key = _migrate_and_create_key(installed, tmp_path, env)
    assert list(tmp_path.iterdir()) == []  # nothing written beside the user
    engine = create_engine(scratch_pg.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            prefixes = conn.execute(text("SELECT prefix FROM api_keys")).scalars().all()
            heads = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    finally:
        engine.dispose()
    assert prefixes == [key[:11]]  # tg_ + 8: the public prefix
    assert heads == [ScriptDirectory.from_config(alembic_config(scratch_pg)).get_current_head()]
