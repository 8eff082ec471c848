# Three stages: `build` makes the wheel from the source tree; `runtime` (the default, last
# stage: the CPU image) and `cuda` (docker build --target cuda: the GPU image) each install
# only that wheel (the models' weights and manifests and the Alembic migrations travel
# inside it), so an image runs the package exactly as `pip install` gives it, with no source
# tree. Both run as the numeric non-root user 10001 (deploy/k8s pins runAsUser to it).
# docker compose builds `runtime` for the app service and `cuda` for app-gpu (profile "gpu").
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------------------------------
# CUDA runtime image: docker build --target cuda -t REGISTRY/tollgate:VERSION-cuda .
# Built FROM NVIDIA's CUDA runtime base (the driver comes from the host through the NVIDIA
# container toolkit); torch is PyPI's default Linux build, which is the CUDA one and brings
# its CUDA libraries as pip packages. Keep the base's CUDA version at or above the one the
# torch wheel was built for. Python is the base distribution's (3.12), in a virtualenv.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS cuda
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/tollgate PATH=/opt/tollgate/bin:$PATH TOLLGATE_DEVICE=cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/tollgate
RUN pip install --no-cache-dir torch==2.13.0
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/tollgate-*.whl && rm -rf /tmp/dist
RUN useradd --system --uid 10001 --create-home --home-dir /srv/tollgate tollgate
WORKDIR /srv/tollgate
USER 10001
EXPOSE 8000
# Migrations run on start; then the API (`tollgate serve --workers N` for several processes).
CMD ["sh", "-c", "tollgate migrate && tollgate serve --host 0.0.0.0 --port 8000"]
# ---------------------------------------------------------------------------------------

# CPU runtime image (the default target).
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: the CPU build; the wheel's torch range admits it, so pip keeps it.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/tollgate-*.whl && rm -rf /tmp/dist
# The working directory is the user's home: the default SQLite ledger (./var) is writable.
RUN useradd --system --uid 10001 --create-home --home-dir /srv/tollgate tollgate
WORKDIR /srv/tollgate
USER 10001
EXPOSE 8000
# Migrations run on start; then the API (`tollgate serve --workers N` for several processes).
CMD ["sh", "-c", "tollgate migrate && tollgate serve --host 0.0.0.0 --port 8000"]
