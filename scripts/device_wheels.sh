#!/usr/bin/env bash
# The wheels the lent GPU machine lacks (its image has Python 3.12, torch, numpy,
# scikit-learn, typer, uvloop, prometheus-client, nvidia-ml-py, httpx; no network), at the
# versions this checkout's .venv runs, into .wheels/ (git-ignored) for the device tool's
# `carry`. Usage: bash scripts/device_wheels.sh; then see docs/benchmarks.md (GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# The service's runtime dependencies that the image lacks, with everything they need
# (resolved for Python 3.12); torch, numpy, scikit-learn, tqdm, typer, prometheus-client and
# nvidia-ml-py are taken from the image.
names="fastapi uvicorn httptools orjson pydantic pydantic-settings sqlalchemy greenlet
aiosqlite asyncpg alembic stripe fpdf2 redis"
pins=()
for name in $names; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "not in $PY's environment: $name" >&2; exit 1; }
  pins+=("$name==$version")
done
rm -rf .wheels && mkdir -p .wheels
"$PY" -m pip download --quiet --only-binary=:all: --dest .wheels \
  --implementation cp --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any "${pins[@]}"
du -sh .wheels
