# vitscope: one image for the API (`vitscope serve`) and the Dash UI (`python -m app.main`).
#
#   docker build -t vitscope:local .                       # CUDA torch from PyPI (x86_64): GPU or CPU at run time
#   docker build -t vitscope:local-cpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .   # smaller, CPU-only torch
#
# docker-compose.yml builds it and runs redis + api + ui; docs/HOSTING.md is the guide.
# Nothing secret is baked in: the API token, the UI password and every other setting come from the environment
# when a container starts.

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Optional index for torch/torchvision only (the pins still come from pyproject.toml); empty: PyPI, whose
# torch==2.14.1 wheel for x86_64 Linux is a CUDA build (its CUDA libraries arrive as nvidia-* wheels).
ARG TORCH_INDEX_URL=""

LABEL org.opencontainers.image.title="vitscope" \
      org.opencontainers.image.description="What do self-supervised Vision Transformers learn? API + Dash UI" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# An unprivileged user with a fixed uid/gid (10001), so bind-mounted folders can be chowned to it.
RUN groupadd --system --gid 10001 vitscope \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/vitscope --create-home \
        --shell /usr/sbin/nologin vitscope

# Build tools pinned (the project builds with --no-build-isolation below, so these are its build backend).
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install pip==26.3 setuptools==84.2.1

WORKDIR /opt/vitscope

# 1. Dependencies, read from pyproject.toml (this layer is rebuilt only when pyproject.toml changes).
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))" \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
        grep -E '^(torch|torchvision)[=<>~!]' /tmp/requirements.txt > /tmp/torch.txt \
        && pip install --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt; \
    fi \
 && pip install -r /tmp/requirements.txt \
 && rm -f /tmp/requirements.txt /tmp/torch.txt

# Where the service keeps its state (volumes below); set before the smoke test so it writes nothing elsewhere.
ENV HOME=/home/vitscope \
    VITSCOPE_MODELS_CACHE=/data/models_cache \
    VITSCOPE_DATA_DIR=/data/uploads

# 2. The project. Installed editable on purpose: the code finds frontend_assets/ and demo_models/ beside its
#    packages (app/context.py, backend/models/catalog.py), which a wheel install would leave behind.
#    The source stays owned by root: the service cannot change its own code.
COPY . .
RUN pip install --no-deps --no-build-isolation -e . \
 && python -m compileall -q backend app \
 && vitscope --version

# 3. Writable state lives in volumes: downloaded/imported weights and uploaded images.
RUN mkdir -p /data/models_cache /data/uploads \
 && chown -R 10001:10001 /data /home/vitscope
VOLUME ["/data/models_cache", "/data/uploads"]

USER 10001:10001

# 8000: the API (and the UI at / unless --no-ui); 8050: the UI on its own (python -m app.main).
EXPOSE 8000 8050

# Liveness of the API, with the Python already in the image (no curl). /api/v1/health never needs the token.
# The UI service overrides it in docker-compose.yml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8000, timeout=4); c.request('GET', '/api/v1/health'); raise SystemExit(c.getresponse().status != 200)"]

CMD ["vitscope", "serve", "--host", "0.0.0.0", "--port", "8000"]
