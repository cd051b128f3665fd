"""`python -m rnncore` is the `rnncore` command."""

from .cli import entry

raise SystemExit(entry())
