"""``python -m serve_app`` = ``san-serve``."""

from .cli import main

raise SystemExit(main())
