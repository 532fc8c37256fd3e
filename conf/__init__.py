"""Celery configuration modules for routing_demo, loaded with ``config_from_object``."""
