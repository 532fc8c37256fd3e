"""The peers the bench compares the shipped app with: a plain Celery app on
Celery's defaults and a Dramatiq app on Dramatiq's defaults, each loaded by
its own worker command (``celery -A …``, ``dramatiq …``) in a bench vhost.

Importing this package loads neither; each module reads its broker from the
environment the bench gives its worker and its measuring child.
"""

#: Celery's default queue: where every task of the plain Celery app goes.
PLAIN_CELERY_QUEUE = "celery"
#: Dramatiq's default queue: where the Dramatiq ``add`` goes.
DRAMATIQ_QUEUE = "default"
