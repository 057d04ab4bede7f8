"""`python -m backend [serve|migrate|token|...]`."""

from .cli import main

raise SystemExit(main())
