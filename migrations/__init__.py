"""Alembic migrations, shipped in the wheel as a package so that an installed ``tollgate``
finds them through ``importlib.resources`` (``app/db/migrate.py``), from any directory."""
