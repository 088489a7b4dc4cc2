"""The corrections API under /api/v1/feedback: store what the model got wrong, list it, show it, delete it.

Writes change what the model will learn, so they are guarded (see `ServerSettings.feedback_mode`): with an
API token every feedback request needs `Authorization: Bearer <token>`; without one they are open only when
the server listens on loopback, and refused (403) when it is exposed. A correction is committed to the
store before the 201 goes out.
"""

from __future__ import annotations

import base64
import hmac
import threading
from collections.abc import AsyncGenerator
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
import cv2
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from digitrec.recognize import MODES
from digitrec.server.deps import ServedModelDep, SettingsDep
from digitrec.server.schemas import ErrorResponse
from digitrec.store import Correction, CorrectionStore, StoreError, open_store, parse_label
from digitrec.store.capture import capture


class LazyStore:
    """The store, opened on the first feedback request (a server that never gets one never touches it)."""

    def __init__(self, location: str | None) -> None:
        self.location = location
        self._store: CorrectionStore | None = None
        self._lock = threading.Lock()

    def get(self) -> CorrectionStore:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.location)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()


async def require_access(request: Request, settings: SettingsDep) -> None:
    """403 when feedback is off (exposed host, no token); 401 without the right bearer token when one is set."""
    mode = settings.feedback_mode
    if mode == "off":
        raise HTTPException(403, f"feedback is off: this server listens on {settings.host} (not loopback) with no"
                                 " API token; start it with --api-token TOKEN (or DIGITREC_API_TOKEN) to accept"
                                 " corrections")
    if mode == "token":
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        assert settings.api_token is not None
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.api_token.encode()):
            raise HTTPException(401, "feedback needs the API token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})


# Ids and offsets are 64-bit in both databases; a larger number is a 422, not an OverflowError in the driver.
MAX_ID = 2**63 - 1
CorrectionId = Annotated[int, Path(ge=1, le=MAX_ID, description="the correction's id")]

router = APIRouter(prefix="/api/v1/feedback", tags=["feedback"], dependencies=[Depends(require_access)])

FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "A token is set and the request lacks it"},
    403: {"model": ErrorResponse, "description": "Feedback is off: exposed host with no token"},
    422: {"model": ErrorResponse, "description": "A bad label, id or paging parameter"},
    503: {"model": ErrorResponse, "description": "The corrections store is unreachable"},
}
POST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "label"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "the image, as for predict"},
                "label": {"type": "string", "description": "the right reading: digits such as 7 or 2026, or none"},
                "mode": {"type": "string", "enum": list(MODES), "description": "how to read it (default auto)"},
            }}}},
    }
}


class CorrectionOut(BaseModel):
    """A stored correction (the image and inputs only in GET /api/v1/feedback/{id})."""

    id: int
    created_at: str = Field(description="when it was stored (ISO 8601, UTC)")
    source: str = Field(description="`page`, `api` or `cli`")
    label: str = Field(description="the right reading: digits, or `none` for not a digit")
    mode: str | None = None
    model_version: str | None = Field(description="the model version that answered; null: unversioned model")
    answer: dict[str, Any] = Field(description="what the model answered (the predict result)")
    image_size: int
    image_sha256: str
    image_reduced: bool = Field(description="true when the stored image is a smaller copy of a large upload")
    n_inputs: int = Field(description="how many 28x28 model inputs were stored")
    image: str | None = Field(default=None, description="the stored image as a data URL")
    inputs: list[str] | None = Field(default=None, description="the 28x28 inputs the model saw, as PNG data URLs")


class CorrectionPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[CorrectionOut]


def store_of(request: Request) -> CorrectionStore:
    return request.app.state.feedback_store.get()


async def in_thread(request: Request, function: Any, *args: Any) -> Any:
    """Run a store call off the event loop; an unreachable store is a 503, not a 500."""
    try:
        store = await anyio.to_thread.run_sync(store_of, request)
        return await anyio.to_thread.run_sync(partial(function, store, *args))
    except StoreError as error:
        raise HTTPException(503, f"corrections store unavailable: {error}") from error


@router.post("", status_code=201, response_model=CorrectionOut, openapi_extra=POST_BODY,
             responses={**FEEDBACK_ERRORS, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse},
                        422: {"model": ErrorResponse}})
async def add_correction(request: Request, served: ServedModelDep, settings: SettingsDep) -> CorrectionOut:
    """Store a correction: the image (multipart `file`), its right reading (`label`), optional `mode`."""
    data, fields = await read_form(request, settings.max_body_bytes)
    try:
        label = parse_label(fields.get("label", ""))
    except ValueError as error:
        raise HTTPException(422, str(error)) from error
    mode = fields.get("mode") or "auto"
    if mode not in MODES:
        raise HTTPException(422, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    # The page's own requests are same-origin fetches; anything else (curl, scripts) is the API.
    source = "page" if request.headers.get("sec-fetch-site") == "same-origin" else "api"
    read = partial(capture, data, label, served.classifier, source=source, mode=mode,
                   model_version=served.version, max_pixels=settings.max_pixels)
    correction = await anyio.to_thread.run_sync(read)  # corrections are rare: no admission budget of their own
    ident = await in_thread(request, CorrectionStore.add, correction)  # committed before the 201
    stored = await in_thread(request, partial(CorrectionStore.get, with_data=False), ident)
    return to_out(stored)


@router.get("", response_model=CorrectionPage, responses=FEEDBACK_ERRORS)
async def list_corrections(request: Request,
                           offset: Annotated[int, Query(ge=0, le=MAX_ID, description="skip this many")] = 0,
                           limit: Annotated[int, Query(ge=1, le=500, description="at most this many")] = 50,
                           ) -> CorrectionPage:
    """The stored corrections, newest first, without images."""
    items = await in_thread(request, CorrectionStore.page, offset, limit)
    total = await in_thread(request, CorrectionStore.count)
    return CorrectionPage(total=total, offset=offset, limit=limit, items=[to_out(item) for item in items])


@router.get("/{correction_id}", response_model=CorrectionOut,
            responses={**FEEDBACK_ERRORS, 404: {"model": ErrorResponse}})
async def get_correction(request: Request, correction_id: CorrectionId) -> CorrectionOut:
    """One correction with its image and the 28x28 inputs the model saw."""
    found = await in_thread(request, CorrectionStore.get, correction_id)
    if found is None:
        raise HTTPException(404, f"no correction with id {correction_id}")
    return to_out(found, with_data=True)


@router.delete("/{correction_id}", status_code=204, responses={**FEEDBACK_ERRORS, 404: {"model": ErrorResponse}})
async def delete_correction(request: Request, correction_id: CorrectionId) -> Response:
    """Delete a correction (the page's undo)."""
    if not await in_thread(request, CorrectionStore.delete, correction_id):
        raise HTTPException(404, f"no correction with id {correction_id}")
    return Response(status_code=204)


def to_out(correction: Correction, *, with_data: bool = False) -> CorrectionOut:
    out = CorrectionOut(**correction.to_json())
    if with_data and correction.image is not None and correction.inputs is not None:
        out.image = "data:application/octet-stream;base64," + base64.b64encode(correction.image).decode("ascii")
        out.inputs = ["data:image/png;base64," + base64.b64encode(cv2.imencode(".png", image)[1].tobytes())
                      .decode("ascii") for image in correction.inputs]
    return out


async def read_form(request: Request, max_bytes: int) -> tuple[bytes, dict[str, str]]:
    """(file bytes, text fields) of a multipart body capped at `max_bytes` (413), 422 when malformed."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise HTTPException(422, "send multipart/form-data with fields 'file' (the image) and 'label'")
    declared = request.headers.get("content-length", "")
    too_large = HTTPException(413, f"request body over the {max_bytes / 1e6:g} MB limit")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large

    async def stream() -> AsyncGenerator[bytes, None]:
        yield bytes(body)

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=16).parse()
    except MultiPartException as error:
        raise HTTPException(422, f"malformed multipart body: {error.message}") from error
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "missing multipart field 'file' (the image)")
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        if "label" not in fields:
            raise HTTPException(422, "missing form field 'label': the right reading (digits, or none)")
        return await upload.read(), fields
    finally:
        await form.close()
