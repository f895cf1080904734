"""``python -m slipstream``: the same as the ``slipstream`` command."""

from .cli import main

main()
