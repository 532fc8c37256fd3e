"""Experiment ``deadletter``: the project's own topology, fed bad messages.

Nothing changes here: the task queues already name the dead-letter exchange
``routing_demo.dlx`` and the task exchange names ``routing_demo.unroutable``
as its alternate exchange. The experiment shows both holding queues filling.
"""

from routing_demo.conf.celeryconfig import *  # noqa: F403
