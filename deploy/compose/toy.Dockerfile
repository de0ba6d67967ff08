# For deploy/compose.yaml only: the sidecar plus the toy orchestrator it runs
# in gate mode. The release image (deploy/Dockerfile) carries the runtime
# alone, so `python -m sidecar_harness.toy_orchestrator` cannot run there.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
COPY sidecar_harness ./sidecar_harness
RUN pip install --no-cache-dir . \
    && rm -rf /src \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin sidecar
WORKDIR /
USER 10001:10001
ENV PYTHONUNBUFFERED=1
EXPOSE 9180
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9180/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["election-sidecar"]
CMD ["run"]
