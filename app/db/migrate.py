"""Alembic from the installed package: the one place that builds its ``Config``.

The migration scripts ship in the wheel as the top-level ``migrations`` package (``env.py``,
``script.py.mako``, ``versions/*.py`` as package data), found through
``importlib.resources``, so ``tollgate migrate`` works from any directory with or without the
source tree. ``tollgate migrate``, the test suite and anything else that migrates go through
:func:`alembic_config`; only the developer's ``alembic`` command reads the top-level
``alembic.ini`` (revision file names, post-write hooks), which points at the same folder.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_PACKAGE = "migrations"


def script_location() -> Path:
    """The folder holding ``env.py`` and ``versions/``, wherever the package is installed."""
    location = files(MIGRATIONS_PACKAGE)
    if not isinstance(location, Path) or not (location / "env.py").is_file():
        raise RuntimeError(f"the migrations package is not a folder with env.py: {location}")
    return location


def alembic_config(database_url: str) -> Config:
    """An Alembic config for ``database_url`` (any URL the app accepts), with no ini file:
    ``migrations/env.py`` reads the URL from ``attributes`` and leaves logging alone."""
    cfg = Config()
    # ConfigParser interpolates "%": a path holding one must not be read as a reference.
    cfg.set_main_option("script_location", str(script_location()).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (``alembic upgrade``)."""
    command.upgrade(alembic_config(database_url), revision)
