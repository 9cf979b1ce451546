# smsrouter with its embedded PostgreSQL; mount a config at /etc/smsrouter.
FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/smsrouter smsrouter
WORKDIR /app
COPY pyproject.toml README.md ./
COPY router ./router
COPY connectors ./connectors
COPY sms ./sms
COPY sims ./sims
COPY smsrouter ./smsrouter
COPY config ./config
RUN pip install --no-cache-dir .
USER smsrouter
WORKDIR /var/lib/smsrouter
ENV SMSROUTER_DATABASE_DATA_DIR=/var/lib/smsrouter/pg
EXPOSE 8080 2775
ENTRYPOINT ["smsrouter"]
CMD ["run", "--config", "/app/config/demo.toml"]
