# inbox-asgi: docker build -t inbox-asgi . && docker run -v "$PWD/certs:/certs:ro" -p 3000:3000 inbox-asgi
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY public ./public
# The wheel bundles public/ as the package's demo pages; redis for scale-out.
RUN pip install --no-cache-dir ".[redis]" \
    && useradd --system --create-home --uid 10001 inbox \
    && rm -rf /src

USER inbox
WORKDIR /home/inbox
ENV INBOX_BIND=0.0.0.0:3000 \
    INBOX_SERVER_CERT=/certs/server.crt \
    INBOX_SERVER_KEY=/certs/server.key \
    PYTHONUNBUFFERED=1
VOLUME ["/certs"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=6s --start-period=5s --retries=3 \
    CMD ["python", "-m", "inbox_asgi.healthcheck"]
CMD ["inbox-asgi"]
