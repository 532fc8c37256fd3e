"""Topology variants for the routing experiments, one settings module each.

Select one with ``CELERY_CONFIG_MODULE=routing_demo.conf.experiments.<name>``:
workers and clients then load it instead of ``routing_demo.conf.celeryconfig``.
Each module starts from the project's settings and changes only what its
experiment is about.
"""
