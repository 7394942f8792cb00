"""The explorer's routes for ``cgaps fill`` and ``cgaps confirm`` results (read-only JSON).

- ``GET /api/fill?run=NAME``: every ``RUN_DIR/fill/*/fill.json`` of the run, shaped by
  :func:`cgaps.report.fill_confirm.fill_results` (the report's own shaping);
- ``GET /api/confirm?run=NAME[&concept=N]``: ``RUN_DIR/confirmation.parquet`` as
  :func:`cgaps.report.fill_confirm.confirm_results` shapes it, its rows cut to concept N when
  given (``{"confirm": null}`` when the run has none).

The files are found from the served run's own folder, never from a request's text. A damaged
file is answered with ``{"error": ...}`` (status 500) naming it, as the report would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, Response

from cgaps.errors import CGapsError
from cgaps.report.fill_confirm import confirm_results, fill_results
from cgaps.serve.store import Store


def register(app: FastAPI, store: Store, respond: Callable[[Any], Response]) -> None:
    """Add the two routes to ``app``; ``respond`` writes a JSON body the way the app does."""

    @app.get("/api/fill")
    def fill(run: str = "") -> Response:
        r = store.run(run)
        try:
            return respond({"fills": fill_results(r.path)})
        except CGapsError as e:
            return JSONResponse({"error": str(e)}, status_code=500)

    @app.get("/api/confirm")
    def confirm(run: str = "", concept: int | None = Query(None, ge=0)) -> Response:
        r = store.run(run)
        try:
            res = confirm_results(r.path)
        except CGapsError as e:
            return JSONResponse({"error": str(e)}, status_code=500)
        if res is not None and concept is not None:
            res["rows"] = [x for x in res["rows"] if x["kind"] == "concept" and x["id"] == concept]
        return respond({"confirm": res})
