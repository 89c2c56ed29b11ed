# zsindex API image. The torch/torchvision pins in pyproject.toml are CUDA builds from PyPI; the
# image runs on CPU unless started with a GPU (see the commented GPU variant in docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ZSINDEX_HOME=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY zsindex ./zsindex
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home zsindex && mkdir -p /data \
    && chown zsindex /data
USER zsindex
EXPOSE 8000
CMD ["sh", "-c", "zsindex db upgrade && zsindex serve --host 0.0.0.0 --port 8000"]
