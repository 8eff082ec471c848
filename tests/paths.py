"""Where the checkout's files are, for tests that read them (docs, deploy files, the shipped
models). The service itself never looks at the source tree: it finds its models and
migrations through the installed packages (app.config.shipped_models_dir, app.db.migrate)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
