"""``python -m fpisa``: the same as the ``fpisa`` command."""

from .cli import main

raise SystemExit(main())
