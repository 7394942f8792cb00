"""User-facing errors.

Every error a user can cause by bad input is a :class:`CGapsError`: the CLI prints its
message on one line (no traceback) and exits with status 2. Messages name the file,
the field and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class CGapsError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> CGapsError:
    """Build the error for an unknown name among a fixed set of choices."""
    choices = sorted(choices)
    return CGapsError(
        f"unknown {kind} {name!r}.{did_you_mean(name, choices)} Valid choices: {', '.join(choices)}"
    )


def settings_diff(
    old: dict[str, Any], new: dict[str, Any], old_name: str = "there", new_name: str = "now"
) -> str:
    """The keys where two settings dicts differ, for an error line: ``k 'a' there, 'b' now, ...``."""
    return ", ".join(
        f"{k} {old.get(k)!r} {old_name}, {new.get(k)!r} {new_name}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    )
