# llm-sidecar: one image for the sidecar (the default command) and the mock provider.
#
#   docker build -t llm-sidecar .
#   docker run --rm -p 8080:8080 --stop-timeout 35 \
#     -v "$PWD/policies:/policies:ro" -e OPENAI_API_KEY llm-sidecar
#   docker run --rm -p 8001:8001 -e HEALTHCHECK_URL=http://127.0.0.1:8001/health \
#     llm-sidecar mock-provider --host 0.0.0.0 --port 8001 --name openai
#
# `--target app` builds the example app's image (examples/app/ plus the openai SDK);
# docker-compose.yml builds both. Dependencies come from lock files made from a working
# .venv (`make lock`, see docs/deploy.md) and are installed with --no-deps
# --require-hashes --only-binary=:all:: exactly the pinned set, each file checked against
# its sha256, nothing resolved or built from source at build time. Lint:
# `.venv/bin/hadolint Dockerfile` (tests/integration/test_deploy_files.py runs it and
# demands no findings).
#
# Labels (OCI): pass the build's facts, e.g.
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE=https://example.com/your/llm-sidecar -t llm-sidecar:0.1.0 .
#
# The admin API stays on 127.0.0.1:8081 inside the container (the sidecar's default):
# bound anywhere else it would need SIDECAR_ADMIN_TOKEN, and the sidecar refuses to start
# without one, so an image default of 0.0.0.0 would not even start. Reach it with
# `docker exec`, or set both SIDECAR_ADMIN_TOKEN and SIDECAR_ADMIN_HOST=0.0.0.0.

# The base image, pinned by the digest of its multi-platform index (amd64 and arm64 alike;
# Python 3.11.15 on Debian trixie, glibc 2.41: the platform the lock files' hashes are
# chosen for, examples/deploy/lock.py). The tag only tells a reader what the digest is;
# Docker pulls by the digest. Renew it (docs/deploy.md#the-base-image) with
#   docker buildx imagetools inspect python:3.11-slim-trixie --format '{{json .Manifest.Digest}}'
ARG PYTHON_IMAGE=python:3.11-slim-trixie@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

# ---- base: what every final image shares (interpreter, user, environment) ----------
FROM ${PYTHON_IMAGE} AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 sidecar \
 && useradd --system --uid 10001 --gid sidecar --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin sidecar
# Python's urllib: slim images have no curl. Any error or non-2xx answer exits 1. Each
# final stage sets HEALTHCHECK_URL; a mock-provider container sets its own port's.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=3)"]
# The servers stop gracefully on SIGTERM (the sidecar drains; see the runtime stage).
STOPSIGNAL SIGTERM
# OCI labels, last in the stage: a new REVISION rebuilds only what follows. `make prune`
# finds this project's old images by the title. VERSION is pyproject.toml's version
# (test_deploy_files checks they agree).
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title=llm-sidecar \
      org.opencontainers.image.description="A reliability sidecar for LLM APIs" \
      org.opencontainers.image.licenses=MIT \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${REVISION} \
      org.opencontainers.image.source=${SOURCE} \
      org.opencontainers.image.base.name=${PYTHON_IMAGE}

# ---- build: a virtualenv holding the locked dependencies and the package ----------
# The venv has no pip or setuptools of its own (--without-pip): the base image's pip
# installs into it with --python, so the final image copies only what runs. Every
# dependency ships a wheel (--only-binary=:all:), so no compiler is installed here
# either. Nothing pip fetches escapes a hash: the build backend too comes from a lock
# (build-requirements.lock, into this stage's own Python), and the package is built
# with --no-build-isolation, so pip never fetches [build-system].requires on its own.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
RUN python -m venv --without-pip /opt/venv
COPY examples/deploy/build-requirements.lock ./
RUN pip install --no-cache-dir --no-deps --require-hashes --only-binary=:all: \
      --requirement build-requirements.lock
# The dependencies' own layer: rebuilt only when the lock changes.
COPY examples/deploy/requirements.lock ./
RUN pip --python /opt/venv/bin/python install --no-cache-dir --no-deps \
      --require-hashes --only-binary=:all: --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
COPY mock_provider ./mock_provider
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
 && pip --python /opt/venv/bin/python install --no-cache-dir --no-deps /tmp/dist/*.whl \
 && pip --python /opt/venv/bin/python check

# ---- build-app: the same venv plus the example app's dependencies -----------------
FROM build AS build-app
COPY examples/deploy/app-requirements.lock ./
RUN pip --python /opt/venv/bin/python install --no-cache-dir --no-deps \
      --require-hashes --only-binary=:all: --requirement app-requirements.lock \
 && pip --python /opt/venv/bin/python check

# ---- app: the example app's web service (docker build --target app) ---------------
FROM base AS app
COPY --from=build-app /opt/venv /opt/venv
WORKDIR /srv
COPY examples/__init__.py ./examples/
COPY examples/app ./examples/app
USER 10001:10001
# The sidecar next to it (a pod's localhost; compose sets http://sidecar:8080/v1).
ENV OPENAI_BASE_URL=http://127.0.0.1:8080/v1 \
    HEALTHCHECK_URL=http://127.0.0.1:8000/health
EXPOSE 8000
CMD ["python", "-m", "examples.app", "--serve", "--host", "0.0.0.0", "--port", "8000"]

# ---- runtime: the sidecar / mock provider image (the default target) --------------
FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
# The default policy, so the image starts on its own; mount a directory over /policies
# (a directory, not a file: edits then hot-reload, ConfigMap symlink swaps included).
COPY policies /policies
WORKDIR /srv
USER 10001:10001
ENV SIDECAR_POLICIES=/policies \
    HEALTHCHECK_URL=http://127.0.0.1:8080/health
EXPOSE 8080
# On SIGTERM the sidecar stops taking connections and gives in-flight requests --grace
# seconds (SIDECAR_GRACE, 25 by default): stop timeouts must be longer (compose: 35s).
STOPSIGNAL SIGTERM
CMD ["sidecar", "run", "--host", "0.0.0.0", "--port", "8080", "--policies", "/policies"]
