# CPU image. For CUDA, build FROM a pytorch/pytorch:*-cuda* runtime image instead and skip the
# torch install line (see docs/operations.md); run with the compose "gpu" profile.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/tollgate
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY models ./models
COPY migrations ./migrations
RUN pip install --no-cache-dir -e .
RUN useradd --system --uid 10001 tollgate
USER tollgate
EXPOSE 8000
# Migrations run on start; then the API (several workers: see TOLLGATE_WORKERS in docs).
CMD ["sh", "-c", "tollgate migrate && tollgate serve --host 0.0.0.0 --port 8000"]
