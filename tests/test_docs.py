"""docs/openapi.json is generated; it must match what the service serves."""

from __future__ import annotations

import json

from app.main import create_app
from tests.paths import REPO_ROOT


def test_openapi_document_is_current() -> None:
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(create_app().openapi())), (
        "docs/openapi.json is stale: run `make openapi`"
    )
