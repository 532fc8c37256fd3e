# The routing_demo worker image: celery workers and beat for compose.yaml.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY routing_demo ./routing_demo
COPY conf ./conf
RUN pip install . && useradd --create-home --uid 10001 routing_demo

# Workers never run as root (Celery warns, and a task would own the container).
USER routing_demo
ENV ROUTING_DEMO_RUN_DIR=/home/routing_demo/run
# The workers' --statedb directory (revoked task ids), made here by the
# non-root user: a named volume mounted on it starts as a copy, ownership
# included, so the workers can write to it.
RUN mkdir -p "$ROUTING_DEMO_RUN_DIR" /home/routing_demo/state
WORKDIR /home/routing_demo

CMD ["celery", "-A", "routing_demo", "worker", "--loglevel", "INFO"]
