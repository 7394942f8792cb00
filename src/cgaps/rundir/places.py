"""Where a command may write: never inside another run's directory (issue 23).

A run directory is a folder holding ``run.json`` or ``items.parquet``; everything in it belongs
to the stages of that run (``cgaps status`` judges them by content, ``cgaps run --force``
deletes them). A command that writes a file or folder of its own choosing (``report --out``,
``export -o``, ``compare --out``, ``train-sae --out``, ``fill --out``) checks the place first,
before it reads or computes anything:

- a place inside a run directory is allowed only when the command was given that run (its
  ``owner``): ``cgaps compare A B --out A`` would replace run A's ``report.html`` with the
  compare page, which ``cgaps status A`` would then call the report;
- even in its own run, a command never writes over a file of the run's stages (or the writer
  lock) unless that file is the command's own output (``report --out RUN/report.html``).

The checks resolve links, so a symlink into a run is judged by where it points.
"""

from __future__ import annotations

from pathlib import Path

from cgaps.errors import CGapsError
from cgaps.rundir.lock import LOCK
from cgaps.rundir.names import ITEMS, RUN_FILES, RUN_JSON

# what makes a folder a run directory (the files every run has from its first stage on)
MARKERS = (RUN_JSON, ITEMS)


def is_run_dir(folder: str | Path) -> bool:
    """Whether ``folder`` is a run directory (it holds run.json or items.parquet)."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / m).is_file() for m in MARKERS)


def run_root(path: str | Path) -> Path | None:
    """The run directory holding ``path`` (``path`` itself when it is one, else its nearest
    ancestor that is), resolved; None outside every run."""
    here = Path(path).resolve()
    for folder in (here, *here.parents):
        if is_run_dir(folder):
            return folder
    return None


def check_output(
    path: str | Path, what: str, *, owner: str | Path | None = None, own: tuple[str, ...] = ()
) -> None:
    """Refuse to write ``path`` (a file or folder ``what`` names, e.g. "--out") inside a run
    directory other than ``owner``, or over one of the run's files other than ``own`` (names the
    command itself writes there). A one-line :class:`~cgaps.errors.CGapsError` naming the run."""
    path = Path(path)
    root = run_root(path)
    if root is None:
        return
    mine = owner is not None and root == Path(owner).resolve()
    if not mine:
        where = "is the run directory" if root == path.resolve() else "lies inside the run directory"
        raise CGapsError(
            f"{what} {path}: {where} {root} (it holds {next(m for m in MARKERS if (root / m).is_file())}), "
            "whose files belong to that run's stages; write to a folder outside every run"
        )
    resolved = path.resolve()
    if resolved.parent == root and resolved.name in (*RUN_FILES, LOCK) and resolved.name not in own:
        raise CGapsError(
            f"{what} {path}: {resolved.name} is a file of run {root} (written by its stages); choose another name"
        )
