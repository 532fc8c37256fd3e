# The two commands of the README. Each builds the virtual environment on
# first use (and again when pyproject.toml changes), then runs.
PYTHON ?= python3
VENV ?= .venv
INSTALLED := $(VENV)/.installed

.PHONY: demo test

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --editable . --group dev
	touch $@

## Start a worker per queue, send a batch of tasks, show which worker ran each.
## On the configured broker when it answers, else on a private RabbitMQ node
## (rabbitmq-server installed) that lives as long as the demo.
demo: $(INSTALLED)
	$(VENV)/bin/python -m routing_demo.demo

## Lint, then the unit and integration tiers: on the local RabbitMQ (AMQP and
## management API) and Redis when they answer, else on a private node and
## redis-server the session starts and stops (rabbitmq-server, redis-server
## installed). The header line "services: ..." says which, and why. Then the
## example project's tests (examples/shop, its own rootdir and settings), on
## the same local fixtures: real `celery -A shop` workers, one per queue.
test: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest --durations=15
	$(VENV)/bin/pytest --durations=5 examples/shop
