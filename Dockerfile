# Recordings gateway: a slim image running as an unprivileged user.
# Build: docker build -t recordings-gateway .
# Run:   docker run -p 8080:8080 -v recordings-data:/data recordings-gateway
# Compose with MinIO: docker compose -f config/compose.yaml up --build
# tests/test_container.py replays the build and install steps below in a shell and
# checks this file against config/compose.yaml; see docs/deployment.md.

# Build stage: the wheel, then a virtual environment holding it and its dependencies.
# Only the environment leaves this stage: no sources, wheels or pip caches.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m pip wheel --no-deps --wheel-dir /wheels .
# Installed from the wheel alone, away from the sources, as a user would install it.
WORKDIR /
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install /wheels/*.whl

# Runtime stage: the same base image, so the environment's interpreter links hold.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home \
       --home-dir /data --shell /usr/sbin/nologin gateway \
    && mkdir /data \
    && chown gateway:gateway /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_DATA_DIR=/data \
    STORAGE_BACKEND=local \
    LOCAL_STORAGE_DIR=/data/recordings \
    LOCAL_STORAGE_FSYNC=true
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# Catalog, signing key and (local backend) recordings; a named volume mounted here
# starts with the image's ownership, so the unprivileged user can write to it.
VOLUME ["/data"]
EXPOSE 8080
# Liveness only: /readyz also checks storage and would restart a healthy gateway
# whose bucket is briefly unreachable. The port follows GATEWAY_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=3)"]
CMD ["gateway", "serve"]
