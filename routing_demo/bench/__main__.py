"""``python -m routing_demo.bench``."""

from .cli import main

raise SystemExit(main())
