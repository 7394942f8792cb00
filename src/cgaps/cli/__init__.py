"""The ``cgaps`` command line: one module per subcommand, heavy imports deferred into the commands.

The console script is :func:`cgaps.cli.entry.main`.
"""
