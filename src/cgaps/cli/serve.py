"""``cgaps serve RUN_DIR [RUN_DIR ...]``: the interactive explorer on http://127.0.0.1:8000/.

Only typer, the standard library and the option dataclass load at module level (``cgaps
--help`` stays instant); DuckDB, FastAPI and uvicorn load inside the command. The socket is
bound here, before the server starts, so that ``--port 0`` can print the port the system
picked, and the URL is the command's result on stdout (docs/explorer.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cgaps.cli._common import options_from
from cgaps.serve.config import LOOPBACK, ServeConfig


def distinct_runs(run_dirs: list[Path]) -> list[Path]:
    """``run_dirs`` with each run once: a run given twice (``runs/a runs/a/``, a link to it) would
    be served under two names as if it were two runs, and compared with itself."""
    from cgaps.console import info

    seen: dict[Path, Path] = {}
    for path in run_dirs:
        key = path.resolve()
        if key in seen:
            info(f"[yellow]{path} is the same run as {seen[key]}: served once[/yellow]")
            continue
        seen[key] = path
    return list(seen.values())


@options_from(ServeConfig)
def serve(
    run_dirs: list[Path] = typer.Argument(
        ...,
        help="Run directories written by `cgaps score` (two on the same items: the Compare view).",
        file_okay=False,
        metavar="RUN_DIR...",
    ),
    *,
    options: dict[str, Any],
) -> None:
    """Explore every concept of one or more runs in the browser: search, details, benchmarks, compare.

    Examples:

        cgaps serve runs/p

        cgaps serve runs/gemma runs/llama --port 8080
    """
    import socket

    from cgaps.console import info, result
    from cgaps.errors import CGapsError

    opts = ServeConfig(**options)
    run_dirs = distinct_runs(run_dirs)
    info(f"opening {len(run_dirs)} run(s)")
    from cgaps.serve.app import create_app
    from cgaps.serve.store import Store

    store = Store(run_dirs, memory_limit=opts.memory_limit, threads=opts.threads)
    if opts.host not in LOOPBACK:
        info(
            f"[yellow]warning: listening on {opts.host}: anyone who can reach this machine can read the "
            "runs' items and responses (the explorer has no login)[/yellow]"
        )
    family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((opts.host, opts.port))
    except OSError as e:
        sock.close()
        raise CGapsError(
            f"cannot listen on {opts.host}:{opts.port} ({e.strerror}); pick another --port, or 0"
        ) from e
    port = sock.getsockname()[1]
    shown = f"[{opts.host}]" if ":" in opts.host else opts.host
    result(f"http://{shown}:{port}/")
    import uvicorn

    config = uvicorn.Config(create_app(store), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
