"""One writer at a time: the advisory lock on a run directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cgaps.errors import CGapsError
from cgaps.rundir.names import SALIENCY_SHARDS

LOCK = ".cgaps.lock"  # held by the process writing the run directory; not a RUN_FILE: --force keeps it
_held: dict[Path, int] = {}  # run dir -> lock fd; re-entrant in one process (the outermost holder releases)


def remove_stale_temporaries(run_dir: str | Path) -> int:
    """Delete the temporary files (``.NAME.*.tmp``, :func:`atomic_path`) that killed writers left in
    the run directory and its shard folder; only call with the run's lock held. Returns how many."""
    run_dir = Path(run_dir)
    n = 0
    for folder in (run_dir, run_dir / SALIENCY_SHARDS):
        if folder.is_dir():
            for path in folder.glob(".*.tmp"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    n += 1
    return n


@contextlib.contextmanager
def writing(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory's writer lock (an advisory ``flock`` on :data:`LOCK`) for a stage.

    A second process writing the same run directory gets a one-line error naming the holder's
    pid instead of doing the same work beside it. The lock is re-entrant within a process (the
    pipeline holds it around its stages). Taking it first removes the temporary files of
    writers that were killed (:func:`remove_stale_temporaries`).
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # a file in the way
        raise CGapsError(f"{run_dir}: cannot be used as a run directory ({e.strerror}); pass a folder") from e
    except OSError as e:  # read-only, permissions, a full disk
        raise CGapsError(
            f"{run_dir}: cannot create the folder ({e.strerror}); check that its parent is writable, or "
            "write elsewhere"
        ) from e
    key = run_dir.resolve()
    if key in _held:
        yield
        return
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise CGapsError(
            f"{path}: cannot create the run's lock file ({e.strerror}); check that {run_dir} is writable"
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise CGapsError(
            f"{run_dir}: another cgaps process (pid {holder}) is writing this run directory; "
            "wait for it to finish, or use another --out"
        ) from e
    try:  # the holder's pid is for the message above; a disk too full for it must not stop here
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        pass
    _held[key] = fd
    try:
        remove_stale_temporaries(run_dir)
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the flock
