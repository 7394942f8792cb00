"""The interactive explorer (``cgaps serve``): a local web app over one or more run directories.

:mod:`cgaps.serve.store` queries the runs' Parquet files in place through DuckDB;
:mod:`cgaps.serve.app` is the FastAPI app (a JSON API and one static page); ``static/`` holds
the page, its script and its own small SVG charts (no CDN: it works offline). How to use it:
docs/explorer.md.
"""
