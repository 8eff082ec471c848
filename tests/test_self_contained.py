"""A fresh clone needs nothing beside it: no tracked file reaches outside the repository
for ``../shared`` (the Stripe fixtures the stand-in uses live in the repo)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT
from tests.stripe_standin import server

THIS = Path(__file__).resolve().relative_to(REPO_ROOT).as_posix()

# A path that leaves the repository for the folder beside it.
OUTSIDE = re.compile(
    r"""\.\./shared\b"""  # ../shared/...
    r"""|REPO_ROOT\.parent\b"""  # REPO_ROOT.parent / ...
    r"""|/\s*["']shared["']"""  # ... / "shared"
    r"""|/work/shared\b"""
)


def _outside_references(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if OUTSIDE.search(line)]


def test_the_scanner_sees_each_way_out() -> None:
    for line in (
        'FIXTURES = "../shared/stripe/fixtures3.json"',
        'path = REPO_ROOT.parent / "shared" / "stripe"',
        "base = Path(__file__).parents[2] / 'shared'",
        "see /work/shared/DESIGN.md",
    ):
        assert _outside_references(line), line
    assert not _outside_references('FIXTURES = HERE / "fixtures" / "fixtures3.json"')


@pytest.mark.skipif(
    shutil.which("git") is None or not (REPO_ROOT / ".git").exists(),
    reason="not a git checkout (git ls-files lists the tracked files)",
)
def test_no_tracked_file_reaches_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    found: list[str] = []
    for name in filter(None, tracked.split("\0")):
        path = REPO_ROOT / name
        if name == THIS or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # weights and other binaries
            continue
        found += [f"{name}: {line}" for line in _outside_references(text)]
    assert found == [], "\n".join(found)


def test_the_stripe_fixtures_hold_every_resource_the_standin_uses() -> None:
    source = Path(server.__file__).read_text(encoding="utf-8")
    used = set(re.findall(r"""fixture\(["']([\w.]+)["']\)""", source))
    assert used >= {"customer", "event", "invoice", "invoiceitem"}
    assert server.FIXTURES_PATH.is_relative_to(REPO_ROOT)
    resources = server._fixtures()
    assert used <= resources.keys()
    assert resources["invoice"]["object"] == "invoice"
    assert (server.FIXTURES_PATH.parent / "LICENSE").read_text().startswith("The MIT License")
