"""What several subcommands share: the run-directory argument, and options generated from dataclasses.

Every config field a command exposes is a field of a documented dataclass (:class:`~cgaps.config.RunConfig`,
:class:`~cgaps.config.ReportConfig`, :class:`~cgaps.robustness.config.RobustnessConfig`,
:class:`~cgaps.sae.training.train.TrainConfig`): :func:`options_from` turns the chosen fields into
``--options`` whose help is the field's own ``metadata["help"]`` and whose default comes from the
field, so a default is written once, in its dataclass, and ``--help`` shows the same text as the
docs. Where the options override a config stored in the run (``run.json``) or a YAML file, their
default is None, meaning "not given", and only the options given reach the command.

Only typer, the standard library and the import-light option modules load here, so
``cgaps --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from cgaps.config import RunConfig

# A run directory that is a file is a usage error (exit 2) before any command code runs.
RunDirArg = typer.Argument(
    ..., help="Run directory (see docs/method.md section 6).", file_okay=False, metavar="RUN_DIR"
)

# The types a field may have to become an option (after dropping None from `X | None`).
_OPTION_TYPES = (str, int, float, bool, Path)

F = TypeVar("F", bound=Callable[..., Any])


def field_help(cls: type, name: str) -> str:
    """The help text of field ``name`` of dataclass ``cls`` (for an argument or a hand-made option)."""
    return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)


def _option_type(cls: type, name: str, hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint
    if base not in _OPTION_TYPES:
        raise TypeError(f"{cls.__name__}.{name}: type {hint!r} cannot be a command-line option")
    return base


def options_from(cls: type, *names: str, into: str = "options", over: str | None = None) -> Callable[[F], F]:
    """Decorate a command so that fields ``names`` of dataclass ``cls`` (all when none) become options.

    The command declares a keyword parameter ``into`` (default name ``options``) and receives
    ``{field: value}`` in it. Two cases:

    - the options fill the dataclass (``over`` None): each option's default is the field's, so
      ``--help`` shows it, and the command gets every field (a field needs a plain default);
    - the options override a stored config (``over`` names it, e.g. "run.json"): each option's
      default is None, meaning "not given", the command gets only the options given, and
      ``--help`` shows ``[default: (run.json, else 16)]``.

    A boolean field gets ``--name/--no-name`` unless its metadata names the pair (``flags``).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    chosen = [fields[n] for n in (names or fields)]
    hints = typing.get_type_hints(cls)
    # (parameter name, field, the dataclass it belongs to, its type, its section or None): a section
    # of the config (a dataclass field, e.g. RunConfig.label) becomes one option per field of its
    # own, named after the section (--label-enrich-p)
    specs: list[tuple[str, dataclasses.Field[Any], type, Any, str | None]] = []
    for f in chosen:
        if f.metadata.get("section"):
            owner = hints[f.name]
            owner_hints = typing.get_type_hints(owner)
            specs += [
                (f"{f.name}_{sf.name}", sf, owner, owner_hints[sf.name], f.name)
                for sf in dataclasses.fields(owner)
            ]
        else:
            specs.append((f.name, f, cls, hints[f.name], None))

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        if into not in signature.parameters:
            raise TypeError(
                f"{func.__name__} needs a keyword parameter {into!r} for the {cls.__name__} options"
            )
        own = [p for p in signature.parameters.values() if p.name != into]
        clash = {p.name for p in own} & {name for name, *_ in specs}
        if clash:
            raise TypeError(
                f"{func.__name__}: parameter(s) {', '.join(sorted(clash))} clash with {cls.__name__}"
            )
        generated = []
        for param, f, owner, hint, section in specs:
            base = _option_type(owner, f.name, hint)
            flags = (_section_flags(f.metadata["flags"], section),) if "flags" in f.metadata else ()
            if over is None:
                if f.default is dataclasses.MISSING:
                    raise TypeError(f"{owner.__name__}.{f.name}: an option needs a plain default")
                option = typer.Option(f.default, *flags, help=f.metadata["help"])
            else:
                shown = _shown_default(f)
                option = typer.Option(
                    None,
                    *flags,
                    help=f.metadata["help"],
                    show_default=f"{over}, else {shown}" if shown else False,
                )
            generated.append(
                inspect.Parameter(
                    param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=base | None
                )
            )

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values: dict[str, Any] = {}
            for param, f, _, _, section in specs:
                value = kwargs.pop(param)
                if over is not None and value is None:  # None: not given, the stored value stays
                    continue
                if section is None:
                    values[f.name] = value
                else:  # a section's options: only those given, merged into the stored section
                    values.setdefault(section, {})[f.name] = value
            return func(**kwargs, **{into: values})

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        # typer reads the annotations too: give it the resolved ones of the new signature
        command.__annotations__ = {p.name: p.annotation for p in params} | {
            "return": signature.return_annotation
        }
        return typing.cast(F, command)

    return decorate


def _section_flags(flags: str, section: str | None) -> str:
    """A boolean's flag pair (``--x/--no-x``) with a section's prefix (``--label-x/--no-label-x``)."""
    if section is None:
        return flags
    prefix = section.replace("_", "-")
    return "/".join(
        f"--no-{prefix}-{f.removeprefix('--no-')}"
        if f.startswith("--no-")
        else f"--{prefix}-{f.removeprefix('--')}"
        for f in flags.split("/")
    )


def _shown_default(field: dataclasses.Field[Any]) -> str:
    """A field's default as ``--help`` shows it ('' for None); a boolean as the flag it means."""
    default = field.default
    if default is None or default is dataclasses.MISSING:
        return ""
    if isinstance(default, bool):
        on, _, off = field.metadata.get("flags", f"--{field.name}/--no-{field.name}").partition("/")
        return (on if default else off).removeprefix("--").replace("_", "-")
    return str(default)


def section_config(run_dir: Path, section: str, options: dict[str, Any]) -> Any:
    """A stage's section of the run's config (run.json; defaults without one) with the options given."""
    return getattr(run_config(run_dir, {section: options}), section)


def run_config(run_dir: Path, options: dict[str, Any]) -> RunConfig:
    """The config stored in the run's run.json (defaults without one), with ``options`` given on the command line."""
    from cgaps import rundir
    from cgaps.config import RunConfig, config_from_run

    path = run_dir / rundir.RUN_JSON
    base = config_from_run(rundir.read_run_json(run_dir), run_dir) if path.exists() else RunConfig()
    return base.replace(**options)
