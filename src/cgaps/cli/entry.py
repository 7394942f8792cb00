"""The ``cgaps`` console script (and ``python -m cgaps``).

:func:`main` loads the command group (:mod:`cgaps.cli.main`, which imports every command's module)
inside itself, so Ctrl-C while the commands load is the same one line as Ctrl-C while one runs, not
a traceback of the import it stopped. (It is not in the package's ``__init__``: importing the
submodule ``cgaps.cli.main`` would replace a function of that name there.)
"""

from __future__ import annotations


def main() -> None:
    """The ``cgaps`` console script (and ``python -m cgaps``)."""
    import sys

    try:
        from cgaps.cli.main import INTERRUPTED, interrupted_line
        from cgaps.cli.main import main as run
    except KeyboardInterrupt:
        from cgaps.console import error

        error("interrupted while starting: nothing was done")
        sys.exit(130)
    try:
        run()
    except KeyboardInterrupt:  # between the commands' own handlers: starting up, shutting down
        from cgaps.console import error

        error(interrupted_line())
        sys.exit(INTERRUPTED)
