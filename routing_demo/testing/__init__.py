"""pytest-celery's setup API on local processes: no Docker needed.

pytest-celery drives brokers, backends and workers through small node and
cluster classes that only ask their "container" for a handful of things
(``ready()``, ``logs()``, ``kill()``, ``restart()``…). This package answers
those on local processes and shared services, one job per module:

- ``process``: a process group with an append-mode log, as a container;
- ``worker``: ``celery -A <app> worker`` for one queue selection;
- ``rabbitmq``: a vhost of the shared broker, or a private RabbitMQ node;
- ``redis``: a database of the shared Redis, or a private ``redis-server``;
- ``app``: the setup app, with the project's own configuration;
- ``fixtures``: the fixture overrides that make ``celery_setup`` use them;
- ``plugin``: the ``--docker`` option and ``local_worker_app`` (the app the
  workers run); ``ports``, ``services``, ``defaults``;
- ``pytest_plugin``: all of it with the session's services, for a project to
  opt in to (``pytest_plugins = ["routing_demo.testing.pytest_plugin"]``).

Importing it starts and connects to nothing. It needs the test
dependencies (pytest, pytest-celery).
"""
