"""``python -m tlkit.cli``: the ``tlkit`` command."""

from tlkit.cli import main

main()
