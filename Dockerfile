# syntax=docker/dockerfile:1
#
# tierstream image: python:3.11-slim, two stages.
#   builder  - resolves and installs the package + deps into /opt/venv
#   runtime  - copies only /opt/venv; runs as an unprivileged user
#
#   docker build -t tierstream:0.1.0 .
#   docker run --rm -p 9108:9108 -e TIERSTREAM_KAFKA_BOOTSTRAP=... tierstream:0.1.0

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, in their own layer: it only changes when pyproject.toml
# or constraints.txt do, not on every source edit.
COPY pyproject.toml constraints.txt README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt

# Then the package itself (deps are already satisfied, so this is quick).
COPY consumer/ consumer/
COPY online_models/ online_models/
COPY schemas/ schemas/
RUN pip install --no-cache-dir -c constraints.txt . \
 && pip check


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="tierstream" \
      org.opencontainers.image.description="Online customer segmentation over Kafka with per-user state in Redis" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TIERSTREAM_METRICS_PORT=9108

RUN groupadd --system --gid 10001 tierstream \
 && useradd --system --uid 10001 --gid tierstream --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tierstream

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

EXPOSE 9108

# Compose defines the same check; this one covers plain `docker run`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://localhost:9108/healthz', timeout=3).status == 200 else 1)"]

# SIGTERM (the default) lets the consumer finish its batch and commit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tierstream"]
CMD ["run"]
