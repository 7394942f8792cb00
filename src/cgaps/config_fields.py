"""How every config of cgaps is written: documented fields and their checks.

A config is a dataclass whose fields carry their ``--help`` text (:func:`documented`), so a
default and its documentation are written once and the command-line options are generated from
them (:func:`cgaps.cli._common.options_from`). A field also says which stages read it
(``stages``): :func:`cgaps.config.stage_config` collects what a stage ran with, which a
completed stage records in ``run.json`` so that changing the field makes exactly those stages
stale (:mod:`cgaps.stages`). The whole run's config is :class:`cgaps.config.RunConfig`; each
stage with options of its own has a section there (``label``, ``robustness``, ``validate``,
``report``), a dataclass built the same way in its package's ``options`` module.

The standard library and :mod:`cgaps.errors` only: ``cgaps --help`` reads every field without
loading numpy.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import field, fields
from typing import Any

from cgaps.errors import CGapsError


def documented(
    default: Any, help: str, *, stages: tuple[str, ...] = (), speed_only: bool = False, **kw: Any
) -> Any:
    """A config field with its ``--help`` text and the stages that read it.

    ``speed_only``: the field changes how fast a stage runs, never what it writes (batch sizes,
    the device), so it is not recorded with the stage's inputs and never makes a run stale.
    Other metadata (``flags``: the option names of a boolean) is passed on."""
    return field(default=default, metadata={"help": help, "stages": stages, "speed_only": speed_only, **kw})


def check_options(kind: str, options: Any, checks: tuple[tuple[str, bool, str], ...]) -> None:
    """Raise the one-line error for the first failing ``(field, holds, rule)`` of an options object,
    naming the field and its flag (``kind``: "robustness", "validate", ...)."""
    for name, holds, rule in checks:
        if not holds:
            flag = "--" + name.replace("_", "-")
            raise CGapsError(
                f"{kind} option '{name}' ({flag}) must be {rule}, got {getattr(options, name)!r}"
            )


def is_integer(x: Any) -> bool:
    """An int that is not a bool (True is an int to Python, never a count to a user)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_field_types(obj: Any, source: str = "config") -> None:
    """Raise the one-line error for the first field of dataclass ``obj`` whose value is not of its
    declared type (``bool`` strictly: "no" or 1 is not a boolean; an int counts as a float)."""
    import typing

    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        allowed = (
            typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        )
        ok = any(
            (t is type(None) and value is None)
            or (t is bool and isinstance(value, bool))
            or (t is int and is_integer(value))
            or (t is float and is_number(value))
            or (t is str and isinstance(value, str))
            or (isinstance(t, type) and dataclasses.is_dataclass(t) and isinstance(value, t))
            for t in allowed
        )
        if not ok:
            want = " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed)
            raise CGapsError(
                f"{source} field '{f.name}' must be {want}, got {value!r} ({type(value).__name__})"
            )


def section(cls: type, stage: str, help: str) -> Any:
    """A section of the run's config: the options of one stage (a dataclass of documented fields),
    read by that stage and recorded with its inputs as a whole."""
    return field(default_factory=cls, metadata={"help": help, "stages": (stage,), "section": True})
