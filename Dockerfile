# syntax=docker/dockerfile:1
# zsindex API image: a builder stage makes the wheel, the final stage installs only that wheel.
#
# The torch/torchvision pins in pyproject.toml are CUDA builds from PyPI; the image runs on CPU
# unless started with a GPU. Migrations are a separate one-shot step, not part of start-up: run
# `zsindex db upgrade` with this image (docker-compose.yml's `migrate` service) before the API
# replicas start, so replicas never race each other to migrate.
#
# tests/deploy/test_container_steps.py parses this file and runs the final stage's steps (the
# install, the user, ENV, the HEALTHCHECK and CMD) outside Docker against the local PostgreSQL:
# it rejects an instruction or command it does not know, so teach it when adding one here.

# One pinned Python release and Debian for both stages (exact patch release; add @sha256:… to
# pin the digests too). The builder uses the full image, which has the C compiler that builds
# the fp16 scan kernel (zsindex/index/_f16scan.c) into the wheel; the final stage is the slim one.
ARG PYTHON_VERSION=3.11.14
ARG DEBIAN=bookworm

FROM python:${PYTHON_VERSION}-${DEBIAN} AS builder
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:${PYTHON_VERSION}-slim-${DEBIAN}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ZSINDEX_HOME=/data
# Only the wheel comes from the builder (a bind mount: it leaves no layer behind), and no build
# tools are installed here; dependencies come as binary wheels. /data is the volume for the
# SQLite default, index caches and downloaded weights (the user's home, so ~/.cache lands there).
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    pip install --no-cache-dir /dist/*.whl \
    && useradd --system --user-group --uid 10001 --home-dir /data --no-create-home zsindex \
    && mkdir -p /data \
    && chown zsindex:zsindex /data
WORKDIR /data
USER zsindex
EXPOSE 8000
# Ready, not just alive: /readyz answers 503 until the served label sets are loaded and again from
# the moment SIGTERM starts the drain, so an orchestrator stops routing to this replica.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
# Exec form: zsindex is PID 1 and receives SIGTERM itself (graceful drain); no shell in between.
CMD ["zsindex", "serve", "--host", "0.0.0.0", "--port", "8000"]
