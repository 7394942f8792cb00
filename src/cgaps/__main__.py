"""``python -m cgaps``: the same entry point as the ``cgaps`` script."""

from cgaps.cli.entry import main

main()
