# smsrouter: the compiled build (mypyc) made in a builder stage with gcc, run
# from a slim image as a non-root user under tini. CONTRACT §1.
#
#   docker build -t smsrouter .
#   docker run -p 8080:8080 -p 2775:2775 -v smsrouter-data:/var/lib/smsrouter smsrouter
#
# Mount point: /var/lib/smsrouter (the VOLUME) holds the embedded PostgreSQL
# (pg/) when SMSROUTER_DATABASE_URL is not set. Config: the demo config
# shipped in the package, or `run --config /etc/smsrouter/router.toml` with a
# file mounted there; any key by SMSROUTER_<SECTION>_<KEY>, and any secret by
# SMSROUTER_<SECTION>_<KEY>_FILE naming a file that holds it (Docker secrets).

FROM python:3.11-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Exactly what pyproject.toml builds from: the build backend it names
# (build_backend/), setup.py (the compiled modules), the README (the long
# description), MANIFEST.in (what an sdist adds), the packages, and config/
# (smsrouter/demo.toml links to it).
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY build_backend ./build_backend
COPY router ./router
COPY connectors ./connectors
COPY sms ./sms
COPY sims ./sims
COPY smsrouter ./smsrouter
COPY config ./config
RUN SMSROUTER_COMPILE=1 pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/smsrouter smsrouter
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Inside the container the listeners take every interface, or the published
# ports reach nothing. The operator API stays on loopback until it has a
# token of its own (SMSROUTER_ADMIN_LISTEN, SMSROUTER_ADMIN_TOKENS_FILE; see
# docker-compose.yml). SMPP over TLS listens once given a certificate and
# key (SMSROUTER_SMPP_TLS_CERT, SMSROUTER_SMPP_TLS_KEY_FILE: README).
ENV SMSROUTER_HTTP_LISTEN=0.0.0.0:8080 \
    SMSROUTER_SMPP_LISTEN=0.0.0.0:2775 \
    SMSROUTER_SMPP_TLS_LISTEN=0.0.0.0:3550 \
    SMSROUTER_DATABASE_DATA_DIR=/var/lib/smsrouter/pg \
    PYTHONUNBUFFERED=1
USER smsrouter
WORKDIR /var/lib/smsrouter
VOLUME ["/var/lib/smsrouter"]
EXPOSE 8080 2775 3550 8082
# /healthz on the HTTP port the listener was given (CONTRACT §3); the slim
# image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('SMSROUTER_HTTP_LISTEN', ':8080').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
# tini as PID 1: it forwards SIGTERM to the daemon, which drains and stops
# the embedded PostgreSQL it started, and reaps what exits.
ENTRYPOINT ["/usr/bin/tini", "--", "smsrouter"]
CMD ["run"]
