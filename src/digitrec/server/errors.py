"""Every error as JSON `{"detail": "..."}` with a message a user can act on, and never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from digitrec.imageio import ImageError, ImageTooLargeError, NotAnImageError
from digitrec.server.admission import ServerBusy

log = logging.getLogger(__name__)


def _error(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


async def image_too_large(request: Request, error: Exception) -> JSONResponse:
    return _error(413, str(error))


async def not_an_image(request: Request, error: Exception) -> JSONResponse:
    return _error(415, str(error))


async def invalid_request(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422, with its error list folded into one readable line (the list stays under `errors`)."""
    assert isinstance(error, RequestValidationError)
    problems = []
    for item in error.errors():
        where, *name = [str(part) for part in item.get("loc", ())] or ["request"]
        label = f"{where} parameter '{'.'.join(name)}'" if name else where
        problems.append(f"{label}: {item.get('msg', 'invalid')}")
    errors = [{"loc": list(item.get("loc", ())), "msg": item.get("msg"), "type": item.get("type")}
              for item in error.errors()]
    return JSONResponse({"detail": "; ".join(problems), "errors": errors},
                        status_code=422)


async def server_busy(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServerBusy)
    response = _error(503, error.detail)
    response.headers["retry-after"] = str(error.retry_after_s)
    return response


async def client_disconnected(request: Request, error: Exception) -> Response:
    # The client went away mid-upload: nobody will read an answer, and it is not a server error.
    client = request.client
    log.info("client %s disconnected during %s %s", f"{client.host}:{client.port}" if client else "?",
             request.method, request.url.path)
    return Response(status_code=499)  # nginx's "client closed request"; never sent


async def internal_error(request: Request, error: Exception) -> JSONResponse:
    # The traceback goes to the server log (Starlette re-raises after this response), never to the client.
    log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(error).__name__)
    return _error(500, "internal server error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    # Starlette picks the handler of the most specific class, so the subclasses win over ImageError.
    app.add_exception_handler(ImageTooLargeError, image_too_large)
    app.add_exception_handler(NotAnImageError, not_an_image)
    app.add_exception_handler(ImageError, not_an_image)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ServerBusy, server_busy)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
    app.add_exception_handler(Exception, internal_error)
