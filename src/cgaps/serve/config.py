"""The options of ``cgaps serve``, documented field by field (the fields' help is ``--help``).

Standard library and :mod:`cgaps.config` only, so ``cgaps --help`` reads them without loading
DuckDB or FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass

from cgaps.config_fields import check_options, documented, is_integer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    """Where the explorer listens and how much memory its query engine may take."""

    host: str = documented(
        "127.0.0.1",
        "Address to listen on. The default is reachable from this machine only; any other "
        "address shows the runs' items to the network (a warning is printed).",
    )
    port: int = documented(8000, "Port to listen on (0 = pick a free one; the URL is printed).")
    memory_limit: str = documented("1GB", "Most memory DuckDB may use for queries (e.g. 512MB, 2GB).")
    threads: int = documented(
        1,
        "Threads DuckDB may use per request once the runs are loaded (loading uses every core; "
        "0 = every core for requests too). A page's queries are small: one thread answers them "
        "fastest on a busy machine.",
    )

    def __post_init__(self) -> None:
        check_options(
            "serve",
            self,
            (
                (
                    "host",
                    isinstance(self.host, str) and bool(self.host.strip()),
                    "an address such as 127.0.0.1",
                ),
                ("port", is_integer(self.port) and 0 <= self.port <= 65535, "an integer in 0-65535"),
                ("threads", is_integer(self.threads) and self.threads >= 0, "an integer >= 0"),
                (
                    "memory_limit",
                    isinstance(self.memory_limit, str)
                    and self.memory_limit[:-2].replace(".", "", 1).isdigit()
                    and self.memory_limit[-2:].upper() in ("KB", "MB", "GB", "TB"),
                    "a size such as 512MB or 2GB",
                ),
            ),
        )
