"""Plain ASGI middleware: security headers on every response, a bound on how long a request may take,
HEAD wherever GET works, and `/healthz` (and refusals when the server is full) answered before anything else."""

from __future__ import annotations

import json
import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digitrec.server.admission import BIG_UPLOAD_BYTES, ServerBusy

# The page loads nothing from elsewhere and builds its DOM from data with textContent, so it can forbid
# everything but its own origin (data:/blob: images are the model's 28x28 views and the user's own upload).
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)
# /docs and /redoc load Swagger UI / ReDoc from this server (pages.py); both set inline styles, ReDoc starts
# a worker from a blob, and Swagger UI's icons are data: URLs. Nothing from another origin.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
COMMON_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


class SecurityHeadersMiddleware:
    """Add CSP, nosniff, Referrer-Policy and framing protection to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"].startswith(DOCS_PATHS) else PAGE_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *COMMON_HEADERS,
                           (b"content-security-policy", csp.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestTimeoutMiddleware:
    """Answer 503 when a request (slow upload included) runs past `timeout_s` and no response has started."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_tracking(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        # The app may read the deadline (request.state.deadline, time.monotonic()) to refuse work it cannot
        # finish in time.
        scope.setdefault("state", {})["deadline"] = time.monotonic() + self.timeout_s
        with anyio.move_on_after(self.timeout_s) as deadline:
            await self.app(scope, receive, send_tracking)
        if deadline.cancelled_caught and not response_started:
            body = json.dumps({"detail": f"the request took longer than {self.timeout_s:g} s and was stopped;"
                                         " try a smaller image"}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


class HeadAsGetMiddleware:
    """Answer HEAD wherever GET is answered: the GET's status and headers, no body.

    Load balancers and uptime checkers use HEAD; FastAPI routes only the methods a route names.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)


HEALTH_PATH = "/healthz"
HEALTH_BODY = b'{"status":"ok"}'  # what health.py's route (kept for the OpenAPI docs) would answer
PREDICT_PATH = "/api/v1/predict"


class HealthFirstMiddleware:
    """Answer GET and HEAD `/healthz` at once, and refuse a prediction the server has no room for, ahead of
    the other middleware, routing and dependencies.

    The app starts serving only once its model is loaded (lifespan), so being reached is being ready. Under
    a flood the event loop is the bottleneck: clients that ignore `Retry-After` come back at once, and each
    refusal that went the whole way (middleware, routing, dependencies, error handler) cost ~0.5 ms of the
    loop, so every probe waited behind hundreds of them. Here a probe is one step, and a refusal a few
    dictionary reads (the route still checks again, and takes the budgets, for what passes).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(b"content-type", b"application/json"),
                        (b"content-length", str(len(HEALTH_BODY)).encode()), (b"cache-control", b"no-store"),
                        *COMMON_HEADERS, (b"content-security-policy", PAGE_CSP.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path == HEALTH_PATH and method in ("GET", "HEAD"):
                await send({"type": "http.response.start", "status": 200, "headers": self.headers})
                await send({"type": "http.response.body", "body": b"" if method == "HEAD" else HEALTH_BODY})
                return
            if path == PREDICT_PATH and method == "POST" and await self._refused(scope, send):
                return
        await self.app(scope, receive, send)

    async def _refused(self, scope: Scope, send: Send) -> bool:
        """Answer 503 now (True) when the route would refuse this upload from its headers alone."""
        state = getattr(scope.get("app"), "state", None)
        admission, settings = getattr(state, "admission", None), getattr(state, "settings", None)
        if admission is None or settings is None or settings.cors_origins:
            return False  # not started; or CORS, whose headers a browser needs on the refusal too: the route's way
        length = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        if not length.isdigit() or int(length) > settings.max_body_bytes:
            return False  # chunked, malformed or too large (413, not 503): the route decides
        try:
            admission.refuse_if_busy(big=int(length) > BIG_UPLOAD_BYTES)
            admission.refuse_if_full(2 * int(length))
        except ServerBusy as busy:
            body = json.dumps({"detail": busy.detail}).encode()
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(busy.retry_after_s).encode()), *COMMON_HEADERS,
                (b"content-security-policy", PAGE_CSP.encode())]})
            await send({"type": "http.response.body", "body": body})
            return True
        return False
