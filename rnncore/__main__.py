"""`python -m rnncore` is the `rnncore` command."""

from .cli import main

raise SystemExit(main())
