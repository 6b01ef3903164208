"""The web console: a page at ``/`` and its assets under ``/console/``, shipped in this
package (``static/``), with no build step and nothing loaded from other hosts.

The console carries no secret and reads nothing of the controller: its script asks the API
(``/v1/``) with the API key the person signs in with, as a bearer token. Every response here
carries a strict Content-Security-Policy: scripts, styles, images and connections from this
origin only, no inline script or style, no frames, no plugins, no form posts, and Trusted
Types enforced, so no string can become markup through an HTML sink.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from controller.errors import NotFoundError

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "font-src 'none'",
    "object-src 'none'",
    "media-src 'none'",
    "worker-src 'none'",
    "frame-src 'none'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
])
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cache-Control": "no-cache",
}
# Every asset served, by name, with its media type: nothing else under static/ is reachable.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "verify.js": "text/javascript; charset=utf-8",
    "submissions.js": "text/javascript; charset=utf-8",
    "submission.js": "text/javascript; charset=utf-8",
    "approvals.js": "text/javascript; charset=utf-8",
    "receipts.js": "text/javascript; charset=utf-8",
    "configuration.js": "text/javascript; charset=utf-8",
}
router = APIRouter(include_in_schema=False)


@cache
def asset(name: str) -> bytes:
    """An asset's bytes, read once from the package."""
    return files(__name__).joinpath("static", name).read_bytes()


def _serve(name: str) -> Response:
    return Response(asset(name), media_type=ASSETS[name], headers=HEADERS)


@router.get("/")
def index() -> Response:
    """The console's page."""
    return _serve("index.html")


@router.get("/console/{name}")
def static(name: str) -> Response:
    """One of the console's assets, by name (``ASSETS``)."""
    if name not in ASSETS or name == "index.html":
        raise NotFoundError("no such console asset")
    return _serve(name)
