# Driftline: `docker build -t driftline .`, then
#   docker run --read-only -v driftline-data:/data -v "$PWD/state:/state:ro" -p 8080:8080 \
#     driftline serve --state /state
# The root filesystem can be read-only: Driftline writes only to /data (the store, auth.db,
# cursors). docs/operations.md has the details.

# --- build: the wheel, and the wheels of every dependency ----------------------------------
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY streams ./streams
COPY graph ./graph
COPY web ./web
COPY rules ./rules
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: the installed wheels, a user of its own, nothing else ------------------------------
FROM python:3.12-slim
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin driftline \
    && mkdir /data && chown driftline:driftline /data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/driftline-*.whl
# No .pyc files at run time (the root filesystem may be read-only); the data volume, the
# listen address and port come from the environment so `serve` needs no flags for them.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DRIFTLINE_DATA_DIR=/data \
    DRIFTLINE_HOST=0.0.0.0 \
    DRIFTLINE_PORT=8080
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# uvicorn drains on SIGTERM (in-flight requests, then the store writer) within 5 s, inside
# docker stop's default 10 s.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('DRIFTLINE_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["driftline"]
CMD ["serve", "--demo"]
