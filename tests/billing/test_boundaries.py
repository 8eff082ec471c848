"""Only the gateway module talks to Stripe."""

from __future__ import annotations

import re

from tests.paths import REPO_ROOT


def test_only_the_gateway_imports_stripe() -> None:
    importers = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "app").rglob("*.py")
        if re.search(r"^\s*(import stripe|from stripe)\b", path.read_text(), re.M)
    )
    assert importers == ["app/billing/stripe_gateway.py"]
