"""The page at `/` and the API docs at `/docs` and `/redoc`: static HTML, CSS and JS served by the app itself.

Nothing is loaded from elsewhere: the page is plain files in `static/` (no build step), and Swagger UI and
ReDoc come from the `fastapi-offline` package (MIT; it ships Swagger UI 5 and ReDoc 2, both bundled with
their license notices), pinned in pyproject.toml. Asset URLs carry a hash of their content (`?v=...`), so
they can be cached for a year while the HTML that names them is revalidated on every visit.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from html import escape
from importlib import metadata, resources
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"
DOCS_ASSETS_URL = "/docs-assets"
# A versioned URL never changes content; an unversioned one (an old bookmark) is revalidated each time.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

router = APIRouter(tags=["page"])


class CachedStaticFiles(StaticFiles):
    """StaticFiles whose responses to `?v=<hash>` URLs are cacheable for a year."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            versioned = b"v=" in scope.get("query_string", b"")
            response.headers["cache-control"] = IMMUTABLE if versioned else REVALIDATE
        return response


def content_version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@cache
def page_html() -> tuple[str, str]:
    """index.html with each /static/NAME turned into /static/NAME?v=HASH, and its ETag (read on first use)."""

    def versioned(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"{STATIC_URL}/{name}?v={content_version(STATIC_DIR / name)}"

    html = re.sub(rf"{STATIC_URL}/([\w.-]+)", versioned, (STATIC_DIR / "index.html").read_text("utf-8"))
    return html, '"' + hashlib.sha256(html.encode()).hexdigest()[:16] + '"'


def html_response(request: Request, html: str, etag: str) -> Response:
    headers = {"cache-control": REVALIDATE, "etag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return HTMLResponse(html, headers=headers)


@router.get("/", include_in_schema=False)
def index(request: Request) -> Response:
    """The drawing and upload page."""
    return html_response(request, *page_html())


# --- API docs, offline --------------------------------------------------------------------------------


def docs_assets_dir() -> Path:
    return Path(str(resources.files("fastapi_offline") / "static"))


@cache
def docs_assets_version() -> str:
    return metadata.version("fastapi-offline")


def docs_html(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n  <meta charset="utf-8">\n'
        '  <meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"  <title>{escape(title)}</title>\n"
        f'  <link rel="icon" href="{STATIC_URL}/favicon.svg" type="image/svg+xml">\n{head}</head>\n'
        f"<body>\n{body}</body>\n</html>\n"
    )


@router.get("/docs", include_in_schema=False)
def swagger_ui(request: Request) -> Response:
    """Swagger UI for the API, from this server's own copy (no CDN: it works offline)."""
    version = docs_assets_version()
    # The start-up script is a file, not inline, so the docs CSP needs no 'unsafe-inline' for scripts.
    start = f"{STATIC_URL}/docs.js?v={content_version(STATIC_DIR / 'docs.js')}"
    html = docs_html(
        f"{request.app.title}: API docs",
        f'  <link rel="stylesheet" href="{DOCS_ASSETS_URL}/swagger-ui.css?v={version}">\n',
        f'  <div id="swagger-ui" data-openapi-url="{escape(request.app.openapi_url or "")}"></div>\n'
        f'  <script src="{DOCS_ASSETS_URL}/swagger-ui-bundle.js?v={version}"></script>\n'
        f'  <script src="{start}"></script>\n',
    )
    return html_response(request, html, f'"{hashlib.sha256(html.encode()).hexdigest()[:16]}"')


@router.get("/redoc", include_in_schema=False)
def redoc(request: Request) -> Response:
    """ReDoc for the API, from this server's own copy (no CDN, no web fonts)."""
    version = docs_assets_version()
    html = docs_html(
        f"{request.app.title}: API reference",
        "",
        f'  <redoc spec-url="{escape(request.app.openapi_url or "")}"></redoc>\n'
        f'  <script src="{DOCS_ASSETS_URL}/redoc.standalone.js?v={version}"></script>\n',
    )
    return html_response(request, html, f'"{hashlib.sha256(html.encode()).hexdigest()[:16]}"')


def static_files() -> StaticFiles:
    """The page's scripts and styles, mounted at /static."""
    return CachedStaticFiles(directory=STATIC_DIR)


def docs_assets() -> StaticFiles:
    """Swagger UI and ReDoc's scripts and styles, mounted at /docs-assets."""
    return CachedStaticFiles(directory=docs_assets_dir())
