"""Routing experiments: one topology variant each, run against a real broker.

Every experiment has a settings module in ``routing_demo.conf.experiments`` and a driver
here that creates nothing on import: ``run_experiment`` (or the
``experiment`` command group) starts the workers it needs in a throw-away
vhost, sends a fixed, seeded mix of tasks, and reports which worker ran what
and what the broker counted in each queue.
"""
