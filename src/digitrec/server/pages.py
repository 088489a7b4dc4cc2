"""The page at `/`: plain HTML, CSS and JS from `static/` (no build step, nothing loaded from elsewhere)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The drawing and upload page."""
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


def static_files() -> StaticFiles:
    """The page's scripts and styles, mounted at /static."""
    return StaticFiles(directory=STATIC_DIR)
