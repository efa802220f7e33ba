# Micelio forge node. Multi-stage: build a wheel, install it into a venv, run as a non-root user.
#   docker build -t micelio .
#   docker run -p 8000:8000 -v micelio-data:/data micelio
# The store and the port come from the environment (MICELIO_STORE may be s3://bucket/prefix).

FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hif ./hif
COPY node ./node
COPY federation ./federation
COPY ui ./ui
RUN pip install --no-cache-dir build==1.2.2 \
    && python -m build --wheel --outdir /dist .

FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/micelio/bin:$PATH \
    MICELIO_STORE=/data/store \
    MICELIO_CACHE_DIR=/data/cache \
    MICELIO_HOST=0.0.0.0 \
    MICELIO_PORT=8000
COPY --from=build /dist /dist
RUN python -m venv /opt/micelio \
    && /opt/micelio/bin/pip install --no-cache-dir /dist/*.whl \
    && rm -rf /dist \
    && useradd --system --create-home --uid 10001 micelio \
    && mkdir -p /data \
    && chown micelio:micelio /data
VOLUME ["/data"]
WORKDIR /data
EXPOSE 8000
USER micelio
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MICELIO_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["micelio", "serve"]
