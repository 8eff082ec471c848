"""Print the service's OpenAPI document (``make openapi`` writes it to docs/openapi.json)."""

from __future__ import annotations

import json

from app.main import create_app

if __name__ == "__main__":
    print(json.dumps(create_app().openapi(), indent=2, sort_keys=True))
