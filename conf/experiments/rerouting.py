"""Experiment ``rerouting``: the project's own topology, rewired while it runs.

The queues and routes stay as they are; which worker consumes ``add`` is
changed live with the ``add_consumer`` and ``cancel_consumer`` control
commands, without restarting anything.
"""

from routing_demo.conf.celeryconfig import *  # noqa: F403
