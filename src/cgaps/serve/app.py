"""The explorer's web app: a JSON API over :class:`~cgaps.serve.store.Store` and one static page.

Design:

- **One page, many URLs.** ``/``, ``/concepts``, ``/concept/{n}``, ``/benchmarks``, ``/themes`` and
  ``/compare`` all answer the same ``index.html``; its script (``static/app.js``) reads the URL
  and draws the view, and moves between views with ``history.pushState``, so every view has a
  URL that can be bookmarked or shared and the browser's back and forward buttons work.
- **Assets from a fixed list.** The page's files are the names in :data:`ASSETS`, read from
  the package; a request for anything else is a 404. No path from a request ever reaches the
  file system, so ``..``, ``%2e%2e``, absolute paths and symlinks lead nowhere.
- **Read-only and text-only.** Only GET (and HEAD) routes exist. Every response carries a
  Content-Security-Policy that allows the page's own script and nothing inline, so even text that
  slipped into the page as markup could not run; the script itself only ever sets
  ``textContent`` with data.
- **400 with a message.** Query parameters are checked here (types, ranges, choices) and by the
  store (runs, scopes, sort columns); a bad one is ``{"error": "..."}`` with status 400, never
  a traceback. An unexpected failure is a 500 with a one-line message; the traceback goes to the
  server's log only.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from cgaps import rundir
from cgaps.console import shorten, visible_controls
from cgaps.serve.store import GAPS, SORTS, STATUSES, BadRequest, Store

log = logging.getLogger(__name__)

# name -> media type: the only files the app serves besides the API
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "fillconfirm.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
PAGES = ("/", "/concepts", "/benchmarks", "/themes", "/compare")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
MAX_PAGE = 10_000_000
MAX_PER_PAGE = 500
MAX_QUERY = 200


def _visible(value: Any) -> Any:
    """``value`` with every string's control characters (NUL, ESC, ...) shown as visible symbols
    (:func:`cgaps.console.visible_controls`, the report's rule): the page sets text only, but raw
    control bytes of benchmark text would still reach the screen and the clipboard."""
    if isinstance(value, str):
        return visible_controls(value)
    if isinstance(value, dict):
        return {k: _visible(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_visible(v) for v in value]
    return value


# The longest model or SAE name the page shows: run.json's names come from other tools' logs too
# (an imported evaluation's model), unchecked, and a page must not carry a 10,000-character name.
MAX_SHOWN_NAME = 300


def _names_cut(summary: dict[str, Any]) -> dict[str, Any]:
    """A run's summary with its model and SAE names cut to :data:`MAX_SHOWN_NAME` characters."""
    return {
        k: shorten(v, MAX_SHOWN_NAME) if k in ("model", "sae") and isinstance(v, str) else v
        for k, v in summary.items()
    }


def _json(body: Any) -> Response:
    """A JSON response written directly (the store's values are already JSON-safe: no NaN, no numpy),
    skipping FastAPI's recursive encoder, which costs more than the query on a 50-row page."""
    return Response(
        json.dumps(_visible(body), allow_nan=False, separators=(",", ":")), media_type="application/json"
    )


RUNS_SLOT = b'<script type="application/json" id="cgaps-runs"></script>'
FIRST_SLOT = b'<script type="application/json" id="cgaps-first"></script>'
# the rows a page of the concept list shows (app.js PAGE): the size of the first pages the page carries
FIRST_ROWS = 25


def _with_data(page: bytes, slot: bytes, body: Any) -> bytes:
    """The page with ``body`` as JSON in the data block ``slot``. Every ``<``, ``>`` and ``&`` is
    written as a JSON escape, so no run or benchmark name, label or token can close the block or
    open markup; the script reads the block as text (``JSON.parse``), and a data block is never run."""
    data = json.dumps(_visible(body), allow_nan=False, separators=(",", ":"))
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    if slot not in page:
        raise RuntimeError(f"index.html has no data block {slot.decode()}")
    return page.replace(slot, slot.replace(b"></", b">" + data.encode() + b"</"))


def _with_runs(page: bytes, body: Any) -> bytes:
    """The page with ``body`` (what /api/runs answers) in its runs data block."""
    return _with_data(page, RUNS_SLOT, body)


def first_pages(store: Store) -> list[dict[str, Any]]:
    """What /api/concepts answers for the concept list's first screens of the first run, with the
    parameters app.js asks with: the whole list, and the gaps (where the landing page opens when the
    run has any). The answers do not change while the server runs."""
    run = store.runs[0]
    out = []
    for gap in ("", "weak") if run.calls.get("gaps") else ("",):
        # app.js leaves empty parameters out and asks in this order
        params = {**({"gap": gap} if gap else {}), "sort": "q_value", "order": "asc", "page": 1}
        body = store.concepts(run, scope=rundir.ALL_SCOPE, gap=gap, per_page=FIRST_ROWS)
        out.append({"path": "/api/concepts", "params": {**params, "per_page": FIRST_ROWS}, "body": body})
    return out


def _asset(name: str) -> bytes:
    return resources.files("cgaps.serve").joinpath("static", name).read_bytes()


def _choice(name: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    if value and value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)} (or empty), got {value!r}")
    return value


class SecurityHeaders:
    """Every response's security headers (the policy, no sniffing, no referrer) and no-store
    unless the route set its own caching: a plain ASGI middleware, which adds the headers to the
    response's start message (Starlette's ``BaseHTTPMiddleware`` runs each request in a task of
    its own with streams between, a cost on every request)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(store: Store) -> FastAPI:
    """The FastAPI app serving ``store``'s runs."""
    app = FastAPI(title="Competency Gaps explorer", docs_url=None, redoc_url=None, openapi_url=None)
    assets = {name: _asset(name) for name in ASSETS}
    runs_body = {
        "runs": [_names_cut(r.summary()) for r in store.runs],
        "sorts": list(SORTS),
        "all": rundir.ALL_SCOPE,
    }
    # the page carries /api/runs' answer and the concept list's first pages (fixed while the server
    # runs): the first view of the list asks the server nothing
    index = _with_data(
        _with_runs(_asset("index.html"), runs_body), FIRST_SLOT, {"answers": first_pages(store)}
    )

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path"))
            parts.append(
                f"{where}: {e.get('msg', 'invalid')}" + (f" (got {e['input']!r})" if "input" in e else "")
            )
        return JSONResponse({"error": "; ".join(parts) or "invalid request"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "not found", 405: "the explorer is read-only: only GET requests"}.get(
            exc.status_code, str(exc.detail)
        )
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    def page() -> Response:
        return Response(index, media_type="text/html; charset=utf-8")

    for path in PAGES:
        app.get(path, include_in_schema=False)(page)

    @app.get("/concept/{concept}", include_in_schema=False)
    def concept_page(concept: int) -> Response:
        return page()

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in assets:
            raise StarletteHTTPException(404)
        return Response(assets[name], media_type=ASSETS[name], headers={"Cache-Control": "max-age=3600"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # the page names /static/icon.svg; a browser that asks here anyway gets the same icon, cached
        return static("icon.svg")

    @app.get("/api/runs")
    def runs() -> Response:
        return _json(runs_body)

    @app.get("/api/concepts")
    def concepts(
        run: str = "",
        scope: str = Query("", max_length=MAX_QUERY),
        q: str = Query("", max_length=MAX_QUERY),
        gap: str = "",
        status: str = "",
        min_support: int = Query(0, ge=0),
        sort: str = "q_value",
        order: str = "asc",
        page: int = Query(1, ge=1, le=MAX_PAGE),
        per_page: int = Query(50, ge=1, le=MAX_PER_PAGE),
    ) -> Response:
        r = store.run(run)
        body = store.concepts(
            r,
            scope=store.scope(r, scope),
            q=q,
            gap=_choice("gap", gap, GAPS),
            status=_choice("status", status, STATUSES),
            min_support=min_support,
            sort=sort,
            order=_choice("order", order, ("asc", "desc")),
            page=page,
            per_page=per_page,
        )
        return _json(body)

    @app.get("/api/concepts.csv")
    def concepts_csv(
        run: str = "",
        scope: str = Query("", max_length=MAX_QUERY),
        q: str = Query("", max_length=MAX_QUERY),
        gap: str = "",
        status: str = "",
        min_support: int = Query(0, ge=0),
        sort: str = "q_value",
        order: str = "asc",
    ) -> Response:
        r = store.run(run)
        chosen = store.scope(r, scope)
        text = store.export(
            r,
            scope=chosen,
            q=q,
            gap=_choice("gap", gap, GAPS),
            status=_choice("status", status, STATUSES),
            min_support=min_support,
            sort=sort,
            order=_choice("order", order, ("asc", "desc")),
        )
        # a file name from the run's (already sanitised) name and the scope, nothing else
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{r.name}-{chosen}-concepts.csv")
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/api/scatter")
    def scatter(
        run: str = "",
        x: str = Query("", max_length=MAX_QUERY),
        y: str = Query("", max_length=MAX_QUERY),
        metric: str = "chi_model",
        min_support: int = Query(1, ge=1),
    ) -> Response:
        r = store.run(run)
        if not x or not y:
            raise BadRequest("scatter needs two scopes: x and y (benchmark names, or ALL)")
        return _json(store.scatter(r, store.scope(r, x), store.scope(r, y), metric, min_support))

    @app.get("/api/concept/{concept}")
    def concept(concept: int, run: str = "", scope: str = Query("", max_length=MAX_QUERY)) -> Response:
        r = store.run(run)
        return _json(store.concept(r, store.concept_id(r, concept), store.scope(r, scope)))

    @app.get("/api/benchmarks")
    def benchmarks(run: str = "") -> Response:
        return _json(store.benchmarks(store.run(run)))

    @app.get("/api/themes")
    def themes(run: str = "", scope: str = Query("", max_length=MAX_QUERY)) -> Response:
        r = store.run(run)
        return _json(store.themes(r, store.scope(r, scope)))

    def _pair(a: str, b: str) -> tuple[Any, Any]:
        if len(store.runs) < 2:
            raise BadRequest("compare needs two served runs: `cgaps serve RUN_A RUN_B`")
        ra = store.run(a or store.runs[0].name)
        rb = store.run(b or store.runs[1].name)
        if ra is rb:
            raise BadRequest(f"compare needs two different runs, got {ra.name!r} twice")
        return ra, rb

    @app.get("/api/compare")
    def compare(
        a: str = "",
        b: str = "",
        scope: str = Query("", max_length=MAX_QUERY),
        q: str = Query("", max_length=MAX_QUERY),
        call: str = "",
        significant: bool = False,
        sort: str = "q_value",
        order: str = "asc",
        page: int = Query(1, ge=1, le=MAX_PAGE),
        per_page: int = Query(50, ge=1, le=MAX_PER_PAGE),
    ) -> Response:
        ra, rb = _pair(a, b)
        body = store.compare(
            ra,
            rb,
            scope=store.scope(ra, scope),
            q=q,
            call=call or ("significant" if significant else ""),
            sort=sort,
            order=_choice("order", order, ("asc", "desc")),
            page=page,
            per_page=per_page,
        )
        return _json(body)

    @app.get("/api/compare/points")
    def compare_points(a: str = "", b: str = "", scope: str = Query("", max_length=MAX_QUERY)) -> Response:
        ra, rb = _pair(a, b)
        return _json(store.compare_points(ra, rb, store.scope(ra, scope)))

    from cgaps.serve import fill_confirm  # /api/fill and /api/confirm

    fill_confirm.register(app, store, _json)
    return app
