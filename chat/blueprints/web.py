"""The customers' chat page: static files from `chat/web/`, one HTML shell for every page URL.

The page is plain HTML, CSS and JavaScript modules (no build step). Its script routes by URL
(`/` and `/c/<conversation_id>`), talks to the REST API with the token from sessionStorage and
follows events over `/ws/chat`. Every answer here carries a strict Content-Security-Policy:
scripts, styles and connections only from Parley itself, nothing inline.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from quart import Blueprint, Response, send_from_directory
from quart_schema import hide

blueprint = Blueprint("web", __name__)

FILES = Path(__file__).resolve().parent.parent / "web"
ASSETS = "/web"
# `connect-src 'self'` covers ws:/wss: to the same host and port (CSP Level 3, and Chromium):
# the page's socket needs nothing more. `img-src` also allows what the icon needs.
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # The page's URLs hold conversation ids: never send them to the sites of cited articles.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@blueprint.after_request
async def add_page_headers(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


async def _shell() -> Response:
    response = await send_from_directory(FILES, "index.html")
    # The shell names its assets by path; a stale cached shell could load old modules.
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get("/")
@hide
async def get_page() -> Response:
    """The chat page."""
    return await _shell()


@blueprint.get("/c/<uuid:conversation_id>")
@hide
async def get_conversation_page(conversation_id: UUID) -> Response:
    """The chat page, opened on one conversation (the script checks it is the user's)."""
    return await _shell()


@blueprint.get(f"{ASSETS}/<path:filename>")
@hide
async def get_asset(filename: str) -> Response:
    """One of the page's scripts, styles or icons."""
    response = await send_from_directory(FILES, filename)
    response.headers["Cache-Control"] = "no-cache"
    return response
