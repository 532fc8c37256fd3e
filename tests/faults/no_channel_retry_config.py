"""The project's configuration with Celery's default for channel errors: a
worker exits on the first one (``broker_channel_error_retry = False``).

Only ``test_consumer_timeout`` loads it (``CELERY_CONFIG_MODULE``), to show
what the project's setting prevents.
"""

from routing_demo.conf.celeryconfig import *  # noqa: F403

broker_channel_error_retry = False
