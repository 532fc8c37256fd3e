"""``python -m routing_demo.experiments``: the experiment commands."""

from .cli import main

main()
