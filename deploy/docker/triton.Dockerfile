# syntax=docker/dockerfile:1.7
# The Triton pool's image: NVIDIA's official Triton image (the server, its CUDA libraries, GPU support)
# with the platform's model runtime, the environment the Python backend runs model.py in, installed
# from deploy/triton/runtime/uv.lock exactly as `make setup` builds .venv-triton (numpy<2, torch,
# transformers, peft, onnxruntime). Build from the repository root:
#   docker build -f deploy/docker/triton.Dockerfile -t llmops-triton .
# 24.10 is Triton 2.51, the server of the lock's nvidia-pytriton wheel that the local stack runs: the
# model runtime is Python 3.11, so the backend stub is that wheel's Python 3.11 stub (the image's own is
# built for its system Python). torch in the lock is PyPI's CUDA build, which carries its CUDA runtime:
# the GPU nodes' driver must support it (see docs/cluster.md).
# The model repository is not in the image: the chart mounts it (a shared volume the deployment service
# writes) or points Triton at an object store (--model-repository=s3://...).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM ${TRITON_IMAGE} AS runtime
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/llmops/python \
    UV_PROJECT_ENVIRONMENT=/opt/llmops/triton-runtime \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
WORKDIR /opt/llmops/runtime
COPY deploy/triton/runtime/pyproject.toml deploy/triton/runtime/uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv python install 3.11 && uv sync --frozen --python 3.11
# The stub of the runtime's Python, linked (not copied: its RPATH finds the wheel's libraries from its
# real place), and libpython on the loader's path, as llmops_stack.triton does for the local server.
RUN runtime=/opt/llmops/triton-runtime/bin/python \
    && stub=$($runtime -c "import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent / 'tritonserver' / 'python_backend_stubs' / '3.11' / 'triton_python_backend_stub')") \
    && test -x "$stub" \
    && ln -sf "$stub" /opt/tritonserver/backends/python/triton_python_backend_stub \
    && ln -sfn "$($runtime -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')" /opt/llmops/python-lib \
    && install -d -o triton-server -g triton-server /models
ENV PATH=/opt/llmops/triton-runtime/bin:$PATH \
    LD_LIBRARY_PATH=/opt/llmops/python-lib:$LD_LIBRARY_PATH
WORKDIR /models
# The official image's unprivileged user.
USER triton-server
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--model-control-mode=explicit"]
