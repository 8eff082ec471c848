# Two stages: the first builds the wheel from the source tree; the second installs only that
# wheel (the models' weights and manifests and the Alembic migrations travel inside it), so
# the image runs the package exactly as `pip install` gives it, with no source tree.
# CPU image. For CUDA, build the runtime stage FROM a pytorch/pytorch:*-cuda* runtime image
# instead and skip the torch install line (see docs/operations.md); run with the compose "gpu"
# profile.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: the CPU build; the wheel's torch range admits it, so pip keeps it.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/tollgate-*.whl && rm -rf /tmp/dist
# The working directory is the user's home: the default SQLite ledger (./var) is writable.
RUN useradd --system --uid 10001 --create-home --home-dir /srv/tollgate tollgate
WORKDIR /srv/tollgate
USER tollgate
EXPOSE 8000
# Migrations run on start; then the API (`tollgate serve --workers N` for several processes).
CMD ["sh", "-c", "tollgate migrate && tollgate serve --host 0.0.0.0 --port 8000"]
