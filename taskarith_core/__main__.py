"""``python -m taskarith_core ...``: see :mod:`taskarith_core.cli`."""

from .cli import main

raise SystemExit(main())
