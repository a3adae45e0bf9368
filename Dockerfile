# gifting_server with its embedded redis-server. Data (AOF, secrets) lives in /data.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gifting_server ./gifting_server
COPY config ./config
RUN pip install --no-cache-dir -e .

ENV GIFTING_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
# Set GIFTING_SECRET and GIFTING_WEBHOOK_SECRET (>= 32 chars), or GIFTING_REDIS_URL for an external Redis.
CMD ["gifting-server", "serve", "--host", "0.0.0.0", "--port", "8000"]
