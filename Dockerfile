# gifting_server with its embedded redis-server (or GIFTING_REDIS_URL for a real Redis:
# compose.yaml). Data (AOF, secrets) lives in /data, owned by the unprivileged user
# the server runs as.
FROM python:3.11-slim

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gifting_server ./gifting_server
COPY config ./config
RUN pip install --no-cache-dir -e .

RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home gifting \
    && mkdir -p /data \
    && chown gifting:gifting /data
USER 10001:10001

ENV GIFTING_DATA_DIR=/data \
    GIFTING_CONFIG_DIR=/app/config \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000
# Ready means Redis answers and the scripts are loaded: /readyz. Python is in the
# image already; curl is not.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
# Set GIFTING_SECRET and GIFTING_WEBHOOK_SECRET (>= 32 chars), or GIFTING_REDIS_URL for an external Redis.
CMD ["gifting-server", "serve", "--host", "0.0.0.0", "--port", "8000"]
